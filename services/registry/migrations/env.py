from services.common.migrations import run_migrations
from services.registry.storage import tables

run_migrations("registry", tables.metadata)
