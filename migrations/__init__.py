"""Alembic migration scripts, shipped as a package so an installed bot can migrate itself.

Run them with `imagine db upgrade` or `bot.db.session.upgrade(url)`. To write a new
revision from a development checkout::

    from alembic import command
    from bot.db.session import alembic_config
    command.revision(alembic_config("sqlite+aiosqlite:///dev.db"), "what changed",
                     autogenerate=True)

(upgrade dev.db to head first; review the generated file, keep batch operations).
"""
