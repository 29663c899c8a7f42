"""Job history: SQLAlchemy 2.0 ORM, Alembic migrations, queries."""
