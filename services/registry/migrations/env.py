from services.common.migrations import run_migrations
from services.registry import storage

run_migrations("registry", storage.metadata)
