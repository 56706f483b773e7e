"""The Discord presentation layer: message texts, views and buttons, delivery, permissions.

Cogs use these to talk to Discord; the core (`bot.core`) never imports them.
"""
