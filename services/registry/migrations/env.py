from services.kit.migrations import run_env
from services.registry.store import metadata

run_env(metadata)
