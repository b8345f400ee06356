"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}
# A rolling upgrade runs the previous release's servers on this schema (store/migrate.py):
# "expand" only adds (new columns nullable or with a server default, which the previous
# release's INSERTs leave out); "contract" removes or tightens what it still uses, and names
# in oldest_server the oldest schema head whose servers run after it.
phase = "expand"


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
