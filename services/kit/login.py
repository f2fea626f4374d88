"""Login protection that cannot be turned against staff (issue 15).

Before: five wrong passwords refused the account for 15 minutes even with the right password
(anyone could lock a colleague out of every service), and a flood of logins with random
usernames was never throttled: each one an Argon2 check on the two cores, staff requests went
from 19 ms to 295 ms (median). Now:

- failures are counted per client address and per account for WINDOW; an attempt waits
  `delay(failures)` (doubling from BASE, capped at CAP) before its password is checked, the
  right password included, so guessing slows down but the right password always gets through;
- Argon2 checks run at most SLOTS at a time (`ArgonGate`); an attempt from a client or for an
  account with recent failures, or from a client with another attempt under way ("suspect"),
  waits behind every clean attempt, and beyond
  MAX_SUSPECT_WAITING waiting suspects it is answered 429 with Retry-After. A flood therefore
  queues behind staff, costs the flooder its own waiting, and never more than SLOTS cores;
- unknown usernames cost one Argon2 check like known ones (UsersFile.authenticate verifies
  against a dummy hash), so timing does not tell which usernames exist.

Per process, in memory: each service instance throttles on its own (a deployment runs one of each).
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.kit.auth import Principal
    from services.kit.users import UsersFile


class Busy(Exception):
    """Too many suspect attempts waiting: answer 429, try again after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many login attempts waiting; retry after {retry_after} s")
        self.retry_after = retry_after


class ArgonGate:
    """At most `slots` password checks at once; clean attempts are served before suspect ones."""

    def __init__(self, slots: int, max_suspect_waiting: int) -> None:
        self.free = slots
        self.max_suspect_waiting = max_suspect_waiting
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []  # (priority, order, waiter)
        self._order = itertools.count()
        self.suspect_waiting = 0

    def _wake(self) -> None:
        while self.free and self._waiting:
            _, _, fut = heapq.heappop(self._waiting)
            if not fut.done():
                self.free -= 1
                fut.set_result(None)

    @asynccontextmanager
    async def slot(self, suspect: bool, retry_after: int = 1) -> AsyncIterator[None]:
        if self.free and not self._waiting:
            self.free -= 1
        else:
            if suspect and self.suspect_waiting >= self.max_suspect_waiting:
                raise Busy(retry_after)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (1 if suspect else 0, next(self._order), fut))
            self.suspect_waiting += suspect
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self.free += 1  # granted while being cancelled: give the slot back
                    self._wake()
                raise
            finally:
                self.suspect_waiting -= suspect
        try:
            yield
        finally:
            self.free += 1
            self._wake()


class Failures:
    """Recent failure times per key (client address or username), bounded in memory: a flood of
    random usernames evicts the oldest keys instead of growing without end."""

    def __init__(self, window_s: float, max_keys: int = 10_000) -> None:
        self.window_s, self.max_keys = window_s, max_keys
        self._by: OrderedDict[str, list[float]] = OrderedDict()

    def count(self, key: str, now: float) -> int:
        recent = [t for t in self._by.get(key, []) if now - t < self.window_s]
        if recent:
            self._by[key] = recent
        else:
            self._by.pop(key, None)
        return len(recent)

    def add(self, key: str, now: float) -> None:
        self._by.setdefault(key, []).append(now)
        self._by.move_to_end(key)
        while len(self._by) > self.max_keys:
            self._by.popitem(last=False)

    def clear(self, key: str) -> None:
        self._by.pop(key, None)


class LoginGuard:
    WINDOW_S = 15 * 60
    BASE_S, CAP_S = 0.25, 4.0       # waits 0.25, 0.5, 1, 2, 4, 4, ... s after 1, 2, 3, 4, 5+ failures
    SLOTS = 2                       # Argon2id takes ~50 ms of one core; the services run on two
    MAX_SUSPECT_WAITING = 16

    def __init__(self, *, slots: int | None = None, base_s: float | None = None, cap_s: float | None = None,
                 max_suspect_waiting: int | None = None) -> None:
        self.base_s = self.BASE_S if base_s is None else base_s
        self.cap_s = self.CAP_S if cap_s is None else cap_s
        self.gate = ArgonGate(slots or self.SLOTS, self.MAX_SUSPECT_WAITING if max_suspect_waiting is None
                              else max_suspect_waiting)
        self.clients = Failures(self.WINDOW_S)
        self.accounts = Failures(self.WINDOW_S)
        self._inflight: dict[str, int] = {}

    def failures(self, client: str, user: str) -> int:
        now = time.monotonic()
        return max(self.clients.count(client, now), self.accounts.count(user.lower(), now))

    def delay(self, failures: int) -> float:
        return 0.0 if failures <= 0 else min(self.base_s * 2 ** (failures - 1), self.cap_s)

    @asynccontextmanager
    async def attempt(self, client: str, user: str) -> AsyncIterator[None]:
        """Wait the delay earned by recent failures, then hold an Argon2 slot for the check."""
        n = self.failures(client, user)
        wait = self.delay(n)
        # a person logs in once at a time: a client's second concurrent attempt is suspect too,
        # or a burst sent before its first failure is counted would queue as clean
        suspect = n > 0 or self._inflight.get(client, 0) > 0
        self._inflight[client] = self._inflight.get(client, 0) + 1
        try:
            if wait:
                # the delay is spent before taking a slot: a sleeping attempt holds no core
                await asyncio.sleep(wait)
            async with self.gate.slot(suspect=suspect, retry_after=max(1, round(wait))):
                yield
        finally:
            left = self._inflight[client] - 1
            if left:
                self._inflight[client] = left
            else:
                del self._inflight[client]

    def failed(self, client: str, user: str) -> None:
        now = time.monotonic()
        self.clients.add(client, now)
        self.accounts.add(user.lower(), now)

    def succeeded(self, client: str, user: str) -> None:
        self.accounts.clear(user.lower())
        self.clients.clear(client)


def client_of(request: Any) -> str:
    return request.client.host if getattr(request, "client", None) else "-"


async def authenticate(guard: LoginGuard, users: UsersFile, client: str, username: str,
                       password: str) -> Principal | None:
    """The one login flow (POST /auth/token and every service's /ui/masuk, kit.web): the earned delay, an
    Argon2 slot, the check off the event loop, the outcome counted. Raises Busy (429)."""
    async with guard.attempt(client, username):
        p = await asyncio.to_thread(users.authenticate, username, password)  # Argon2 is slow on purpose
    (guard.succeeded if p is not None else guard.failed)(client, username)
    return p
