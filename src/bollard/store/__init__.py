"""Persistence: SQLAlchemy tables, queries with compare-and-swap guards, Alembic migrations."""
