from alembic import context

from services.trainer.models import Base
from shared.db import run_migrations

run_migrations(context, Base.metadata)
