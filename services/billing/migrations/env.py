from services.billing import storage
from services.common.migrations import run_migrations

run_migrations("billing", storage.metadata)
