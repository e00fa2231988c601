"""Initial schema: users, roles, permissions, documents; seed the three roles.

Revision ID: 0001
Revises:
Create Date: 2026-01-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ROLE_PERMISSIONS = {
    "admin": ["users:manage", "roles:assign", "documents:read", "documents:write"],
    "editor": ["documents:read", "documents:write"],
    "viewer": ["documents:read"],
}
ROLE_DESCRIPTIONS = {
    "admin": "Manages users and role assignments; full document access",
    "editor": "Reads and writes documents",
    "viewer": "Reads documents",
}


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    roles = op.create_table(
        "roles",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(32), nullable=False, unique=True),
        sa.Column("description", sa.String(255), nullable=False, server_default=""),
    )
    permissions = op.create_table(
        "permissions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
    )
    role_permissions = op.create_table(
        "role_permissions",
        sa.Column(
            "role_id", sa.Integer, sa.ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "permission_id",
            sa.Integer,
            sa.ForeignKey("permissions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
    )
    op.create_table(
        "user_roles",
        sa.Column(
            "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "role_id", sa.Integer, sa.ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "assigned_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_table(
        "documents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("body", sa.Text, nullable=False, server_default=""),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )

    names = sorted({p for perms in ROLE_PERMISSIONS.values() for p in perms})
    op.bulk_insert(permissions, [{"id": i, "name": n} for i, n in enumerate(names, start=1)])
    op.bulk_insert(
        roles,
        [
            {"id": i, "name": r, "description": ROLE_DESCRIPTIONS[r]}
            for i, r in enumerate(ROLE_PERMISSIONS, start=1)
        ],
    )
    role_ids = {r: i for i, r in enumerate(ROLE_PERMISSIONS, start=1)}
    perm_ids = {n: i for i, n in enumerate(names, start=1)}
    op.bulk_insert(
        role_permissions,
        [
            {"role_id": role_ids[r], "permission_id": perm_ids[p]}
            for r, perms in ROLE_PERMISSIONS.items()
            for p in perms
        ],
    )
    # Explicit ids were inserted: move the sequences past them.
    op.execute("SELECT setval('roles_id_seq', (SELECT max(id) FROM roles))")
    op.execute("SELECT setval('permissions_id_seq', (SELECT max(id) FROM permissions))")


def downgrade() -> None:
    for table in ("documents", "user_roles", "role_permissions", "permissions", "roles", "users"):
        op.drop_table(table)
