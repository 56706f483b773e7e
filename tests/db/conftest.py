from tests.db.fixtures import clock, db_url, empty_db_url, engine, migrated_template, sessions

__all__ = ["clock", "db_url", "empty_db_url", "engine", "migrated_template", "sessions"]
