from services.kit.migrations import run_env
from services.disbursement.store import metadata

run_env(metadata)
