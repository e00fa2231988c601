"""notes-api: personal notes behind an OAuth2 password login (Starlette, SQLAlchemy, Alembic)."""
