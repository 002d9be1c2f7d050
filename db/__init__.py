"""Persistence: SQLAlchemy models, engine and sessions, the unit of work, queries, migrations."""
