"""The bot's features, one cog each; `bot.app` builds them with their dependencies."""
