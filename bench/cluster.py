"""`--cluster` for the benchmarks: the same run on a three-node JetStream cluster.

The cluster is tests/cluster_support.py's: three nats-server processes from the wheel on
loopback, configured by `sinergi deploy init`'s generator for the cluster profile (routes,
`sync_interval: always`, the regency's users), every stream with three replicas. The services
connect as their own identities (`svc-<service>`) with every node's URL; the benchmark itself
connects as an extra identity allowed everything, because its raw baseline needs a scratch
stream (created with the same three replicas) that no deployed identity may create.
"""
from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nats  # noqa: E402

from services.kit.bus import connect_options  # noqa: E402
from services.kit.settings import Settings  # noqa: E402
from tests.cluster_support import Cluster, running_cluster  # noqa: E402


@contextlib.asynccontextmanager
async def cluster(base: Settings) -> AsyncIterator[Cluster]:
    """A fresh three-node cluster (streams with three replicas) for one benchmark run."""
    root = Path(tempfile.mkdtemp(prefix="sinergi-bench-cluster-"))
    try:
        async with running_cluster(root, base, 3, bench_user=True) as c:
            yield c
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def connect(settings: Settings, name: str, **kw: Any) -> nats.aio.client.Client:
    """The benchmark's own connection: every node of a cluster, its identity if it has one."""
    return await nats.connect(**{**connect_options(settings, name), **kw})
