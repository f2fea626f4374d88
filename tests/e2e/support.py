"""Driving `sinergi up` from outside, as a user does: a subprocess on the embedded default (no
SINERGI_NATS_URL / DATABASE_URL: the embedded nats-server and PostgreSQL under a temporary
data dir, HTTP on free ports), what it wrote to DATA_DIR/endpoints.json, and raw nats-py with
the `operator` NATS identity it generated there (its NATS refuses anonymous clients)."""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nats
import psutil

from services.kit.auth import Principal, Role, issue_token
from services.kit.bus import connect_options
from services.kit.local import LocalSystem
from services.kit.settings import SERVICES
from services.kit.users import UsersFile
from tests import factories

ROOT = Path(__file__).resolve().parents[2]


def free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port_base() -> int:
    for _ in range(200):
        base = random.randrange(20000, 40000, 10)
        if all(free(base + i) for i in range(len(SERVICES))):
            return base
    raise RuntimeError("no four consecutive free ports")


def up_env(http_port_base: int | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SINERGI_")}  # the embedded default
    env.update(SINERGI_HTTP_PORT_BASE=str(http_port_base or free_port_base()), SINERGI_LOG_LEVEL="info",
               SINERGI_ENV="development")
    return env


class Up:
    """One `sinergi up` process and what it reported in DATA_DIR/endpoints.json."""

    def __init__(self, data_dir: Path, log: Path, argv: list[str] | None = None, cwd: Path = ROOT) -> None:
        self.data_dir, self.log_path = data_dir, log
        self.system = LocalSystem(data_dir.resolve())
        self.log = open(log, "ab")  # noqa: SIM115 - the process writes it until interrupt() closes it
        argv = argv or [sys.executable, "-m", "services.cli", "up", "--data-dir", str(data_dir)]
        self.proc = subprocess.Popen(argv, cwd=cwd, env=up_env(), stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.endpoints = self._wait_endpoints()

    async def connect(self, identity: str = "operator") -> nats.NATS:
        """A NATS client with one of the identities `sinergi up` generated in the data dir."""
        return await nats.connect(**connect_options(self.system.settings(identity), f"e2e-{identity}"))

    def headers(self, role: Role = Role.kabupaten, area: str = "") -> dict:
        """A bearer token for a staff account of that role (made in the data dir's users file if
        missing: the services check it), signed with the data dir's secret."""
        user = f"e2e-{role.value.replace('_', '-')}"
        accounts = UsersFile(self.system.users_file)
        if user not in accounts.load():
            accounts.add(user, "e2e-password-not-used", role, area)
        token = issue_token(Principal(user=user, role=role, area=area), self.system.auth_secret)
        return {"Authorization": f"Bearer {token}"}

    def output(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def _wait_endpoints(self, timeout: float = 240) -> dict:
        path = self.data_dir / "endpoints.json"
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"sinergi up exited with {self.proc.returncode}:\n{self.output()}")
            if path.exists():
                return json.loads(path.read_text())
            time.sleep(0.3)
        self.interrupt()
        raise AssertionError(f"sinergi up not ready in {timeout} s:\n{self.output()}")

    def refresh(self) -> dict:
        """endpoints.json as it is now: `sinergi up` writes it again after restarting a process."""
        self.endpoints = json.loads((self.data_dir / "endpoints.json").read_text())
        return self.endpoints

    def url(self, service: str) -> str:
        return self.endpoints["services"][service]["url"]

    def pids(self) -> list[int]:
        return ([s["pid"] for s in self.endpoints["services"].values()]
                + [p for p in self.endpoints["embedded"].values() if p])

    def interrupt(self, timeout: float = 90) -> int:
        """Ctrl-C: SIGINT to the foreground process group, as a terminal sends it."""
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        finally:
            self.log.close()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def all_gone(pids: list[int], timeout: float = 10) -> None:
    deadline = time.time() + timeout
    while left := [p for p in pids if not gone(p)]:
        if time.time() > deadline:
            raise AssertionError(f"still running {timeout} s after the stop: {left}")
        time.sleep(0.2)


def eventually(check, timeout: float = 30, interval: float = 0.2):
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"not met in {timeout} s (last: {last!r})")


async def enrol_all(up: Up, reports: list[dict], program: str = "pkh", timeout: float = 60) -> dict[str, dict]:
    """Publish agency reports as an agency does (`Nats-Msg-Id` = `<program>:<message_id>`) and
    return every receipt by message_id; fails unless each report got one within `timeout`."""
    nc = await up.connect()
    got: dict[str, dict] = {}
    try:
        async def on_receipts(msg) -> None:
            for r in factories.receipts_of(msg.data):
                got[r["message_id"]] = r
        sub = await nc.subscribe(f"agency.{program}.receipts", cb=on_receipts)
        js = nc.jetstream()
        for rep in reports:
            ack = await js.publish(f"agency.{program}.enrolments", json.dumps(rep).encode(),
                                   headers={"Nats-Msg-Id": f"{program}:{rep['message_id']}"})
            assert ack.stream == "AGENCY_ENROLMENTS" and not ack.duplicate
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and not all(r["message_id"] in got for r in reports):
            await asyncio.sleep(0.2)
        await sub.unsubscribe()
    finally:
        await nc.close()
    missing = [r["message_id"] for r in reports if r["message_id"] not in got]
    assert not missing, f"{len(missing)} of {len(reports)} reports got no receipt in {timeout} s"
    return got
