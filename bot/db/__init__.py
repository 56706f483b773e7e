"""Storage: SQLAlchemy models, engines and sessions, and migrations (in `migrations/`).

Nothing here imports discord; PostgreSQL (postgresql+asyncpg) and SQLite (aiosqlite)
are both supported.
"""
