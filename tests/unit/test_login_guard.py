"""Login protection (issue 15, services/kit/login.py): the right password is never refused
outright, a flood of logins queues behind staff instead of starving them, unknown usernames
cost an Argon2 check like known ones. No wall-clock assertions: order and counts only."""
from __future__ import annotations

import asyncio
import secrets

import httpx
import sqlalchemy as sa

from services.kit import users
from services.kit.auth import Role
from services.kit.login import Busy, LoginGuard
from services.kit.outbox import inbox_table, outbox_table
from services.kit.runtime import Kit
from services.kit.settings import Settings

PASSWORD = "kata-sandi-panjang-1"


async def _until(cond, what: str, bound: int = 3000) -> None:
    for _ in range(bound):  # a generous bound on a loaded machine: up to ~30 s of polling
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


async def test_clean_attempts_are_served_before_a_flood_and_excess_gets_429():
    guard = LoginGuard(slots=1, base_s=0, max_suspect_waiting=8)
    guard.failed("10.0.0.66", "x")  # the flooder has failed before: its attempts are suspect
    order: list[str] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with guard.attempt("10.0.0.1", "ani"):
            await release.wait()
        order.append("holder")

    async def attempt(client: str, user: str, name: str) -> str:
        try:
            async with guard.attempt(client, user):
                order.append(name)
        except Busy as exc:
            assert exc.retry_after >= 1
            return "busy"
        return "ok"

    hold = asyncio.create_task(holder())
    await _until(lambda: guard.gate.free == 0, "the holder has the slot")
    flood = [asyncio.create_task(attempt("10.0.0.66", secrets.token_hex(6), f"flood{i}")) for i in range(20)]
    await _until(lambda: guard.gate.suspect_waiting == 8 and sum(t.done() for t in flood) == 12,
                 "8 flood attempts waiting, 12 refused")
    staff = asyncio.create_task(attempt("10.0.0.2", "pm", "staff"))
    await _until(lambda: len(guard.gate._waiting) == 9, "staff waiting behind the slot")
    release.set()
    await asyncio.gather(hold, staff, *flood)
    assert [t.result() for t in flood].count("busy") == 12
    assert order[0] == "holder" and order[1] == "staff" and len(order) == 10


async def test_delays_grow_with_failures_and_are_capped():
    guard = LoginGuard(base_s=0.25, cap_s=4)
    assert [guard.delay(n) for n in range(8)] == [0, 0.25, 0.5, 1, 2, 4, 4, 4]
    for _ in range(3):
        guard.failed("10.0.0.9", "pm")
    assert guard.failures("10.0.0.1", "PM") == 3  # by account, whatever the client
    assert guard.failures("10.0.0.9", "ani") == 3  # by client, whatever the account
    guard.succeeded("10.0.0.9", "pm")
    assert guard.failures("10.0.0.9", "pm") == 0


def test_unknown_usernames_cost_one_argon2_check_like_known_ones(tmp_path, monkeypatch):
    f = users.UsersFile(tmp_path / "users.yaml")
    f.add("pm", PASSWORD, Role.program_manager, "")
    f.add("off", PASSWORD, Role.program_manager, "")
    f.set_disabled("off")
    checked: list[str] = []
    real = users._hasher

    class Counting:
        def verify(self, h: str, pw: str) -> bool:
            checked.append(h)
            return real.verify(h, pw)

    monkeypatch.setattr(users, "_hasher", Counting())
    assert f.authenticate("nobody-here", PASSWORD) is None
    assert f.authenticate("off", PASSWORD) is None
    assert f.authenticate("pm", "wrong-password-123") is None
    assert f.authenticate("pm", PASSWORD) is not None
    assert len(checked) == 4 and checked[0] == users._DUMMY


async def test_a_flood_of_random_usernames_does_not_starve_a_staff_login(tmp_path):
    """Issue 15: 40 concurrent logins with random usernames from one client, and a staff login
    from another. Before: every attempt an Argon2 check in arrival order, none refused, the
    staff login behind the whole flood. Now: the flood beyond the waiting bound gets 429 with
    Retry-After, the staff login is served before the flood attempts still waiting."""
    users.UsersFile(tmp_path / "users.yaml").add("pm", PASSWORD, Role.program_manager, "")
    md = sa.MetaData()
    outbox_table(md), inbox_table(md)
    app = Kit("intake", Settings(auth_secret="s" * 40, users_file=str(tmp_path / "users.yaml"), _env_file=None),
              md).http_app("test")
    done: list[str] = []

    async def login(c: httpx.AsyncClient, user: str, password: str, name: str) -> httpx.Response:
        r = await c.post("/auth/token", data={"username": user, "password": password})
        done.append(name)
        return r

    def client(host: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(host, 5000)),
                                 base_url="http://t", timeout=120)

    async with client("10.0.0.66") as attacker, client("10.0.0.2") as office:
        flood = [asyncio.create_task(login(attacker, "u" + secrets.token_hex(6), "wrong-password-1", f"f{i}"))
                 for i in range(40)]
        await _until(lambda: sum(t.done() for t in flood) >= 40 - LoginGuard.MAX_SUSPECT_WAITING - LoginGuard.SLOTS,
                     "the flood beyond the waiting bound answered")
        staff = await login(office, "pm", PASSWORD, "staff")
        answers = await asyncio.gather(*flood)
    assert staff.status_code == 200
    refused = [r for r in answers if r.status_code == 429]
    assert len(refused) >= 40 - LoginGuard.MAX_SUSPECT_WAITING - LoginGuard.SLOTS
    assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
    assert {r.status_code for r in answers} <= {401, 429}
    # every flood attempt still waiting when staff came (at least MAX_SUSPECT_WAITING - SLOTS) ends after it
    assert len(done) - 1 - done.index("staff") >= LoginGuard.MAX_SUSPECT_WAITING - LoginGuard.SLOTS
