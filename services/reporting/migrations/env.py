from services.kit.migrations import run_env
from services.reporting.store import metadata

run_env(metadata)
