"""Alembic environment: the portal passes its engine in; no alembic.ini is needed."""

from alembic import context

from services.store.orm import Base

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()
