from alembic import context

from services.profiler.models import Base
from shared.db import run_migrations

run_migrations(context, Base.metadata)
