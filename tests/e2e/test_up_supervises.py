"""`sinergi up` supervises what it started (issue 11): `kill -9` of one service restarts that
service, with a line on the terminal and its new pid in endpoints.json, while the others keep
answering; afterwards 100 new agency reports are all answered. The embedded nats-server,
killed the same way, comes back on the same port with its data.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import httpx
import pytest

from services.kit.settings import SERVICES
from tests import factories
from tests.e2e.support import Up, all_gone, enrol_all, eventually, gone

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]


def _status(url: str, path: str) -> int | None:
    try:
        return httpx.get(url + path, timeout=2).status_code
    except httpx.HTTPError:
        return None


def _reports(n: int) -> list[dict]:
    return [factories.enrolment("pkh", is_head_of_household=True) for _ in range(n)]


@pytest.fixture
def up(tmp_path):
    running = Up(tmp_path / "data", tmp_path / "up.log")
    yield running
    code = running.interrupt()
    assert code == 0, running.output()
    assert "Traceback" not in running.output(), running.output()
    all_gone(running.pids())


def test_a_killed_service_is_restarted_and_the_others_keep_running(up):
    victim, others = "registry", [s for s in SERVICES if s != "registry"]
    before = up.refresh()
    old_pid = before["services"][victim]["pid"]
    os.kill(old_pid, signal.SIGKILL)

    # while it is down and coming back, the others answer all along, and `up` itself stays up
    checks = 0
    deadline = time.time() + 60
    while time.time() < deadline:
        for svc in others:
            assert _status(up.url(svc), "/healthz") == 200, (svc, up.output())
        checks += 1
        assert up.proc.poll() is None, f"sinergi up exited:\n{up.output()}"
        now = up.refresh()
        if now["services"][victim]["pid"] != old_pid and _status(up.url(victim), "/readyz") == 200:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"{victim} not restarted and ready in 60 s:\n{up.output()}")
    assert checks >= 2  # the others were asked while the victim was down, not only afterwards

    new_pid = up.endpoints["services"][victim]["pid"]
    assert new_pid != old_pid and gone(old_pid)
    for svc in others:  # untouched: same processes
        assert up.endpoints["services"][svc]["pid"] == before["services"][svc]["pid"]
        assert _status(up.url(svc), "/readyz") == 200
    out = " ".join(up.output().split())
    log = before["logs"][victim]
    assert f"{victim} (pid {old_pid}) killed by SIGKILL; restarting it in 1 s; its log: {log}" in out, out
    assert f"{victim} restarted (pid {new_pid})" in out, out
    assert "stopped unexpectedly" not in out

    receipts = asyncio.run(enrol_all(up, _reports(100)))
    assert len(receipts) == 100
    assert {r["status"] for r in receipts.values()} == {"succ"}, receipts


def test_a_killed_embedded_nats_comes_back_on_the_same_port(up):
    before = up.refresh()
    old_pid = before["embedded"]["EmbeddedNats"]
    asyncio.run(enrol_all(up, _reports(5)))  # streams and consumers in use
    os.kill(old_pid, signal.SIGKILL)

    def restarted():
        pid = up.refresh()["embedded"]["EmbeddedNats"]
        return pid != old_pid and pid
    new_pid = eventually(restarted, timeout=30)
    assert up.endpoints["nats"] == before["nats"]  # same URL: clients reconnect by themselves
    assert {s: v["pid"] for s, v in up.endpoints["services"].items()} == \
        {s: v["pid"] for s, v in before["services"].items()}  # the services were left alone
    out = " ".join(up.output().split())
    assert re.search(rf"nats-server \(pid {old_pid}\) killed by SIGKILL; restarting it in 1 s", out), out
    assert f"nats-server restarted (pid {new_pid})" in out, out

    eventually(lambda: all(_status(up.url(s), "/readyz") == 200 for s in SERVICES), timeout=60)
    receipts = asyncio.run(enrol_all(up, _reports(20), timeout=90))
    assert {r["status"] for r in receipts.values()} == {"succ"}, receipts
