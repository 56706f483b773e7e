"""imagine: the Discord bot around the `generation` engine.

Importing this package must not import discord: the CLI's `generate` and `db` commands,
the storage layer and the services are usable without it.
"""

__version__ = "0.1.0"
