"""The restart policy of `sinergi up` (services/kit/supervisor.py): the backoff on its own, and
the supervisor's decisions with a fake clock and fake children (no processes, no sleeping)."""
from __future__ import annotations

import signal
from pathlib import Path

from services.kit.supervisor import Backoff, Supervisor, describe_exit


def test_backoff_doubles_from_one_second_up_to_thirty():
    b = Backoff()
    assert [b.next_delay(uptime=0.5) for _ in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]


def test_backoff_stays_at_the_cap_however_many_crashes():
    b = Backoff()
    for _ in range(5000):  # 2.0 ** 1024 would overflow a float
        delay = b.next_delay(uptime=1)
    assert delay == 30


def test_backoff_starts_over_after_a_minute_up():
    b = Backoff()
    assert [b.next_delay(uptime=3) for _ in range(4)] == [1, 2, 4, 8]
    assert b.next_delay(uptime=59.9) == 16  # not quite a minute: still the same run of crashes
    assert b.next_delay(uptime=60) == 1  # a minute up: this crash is a first crash again
    assert b.next_delay(uptime=0) == 2


def test_backoff_is_configurable():
    b = Backoff(first=0.5, factor=3, cap=10, reset_after=5)
    assert [b.next_delay(uptime=0) for _ in range(4)] == [0.5, 1.5, 4.5, 10]
    assert b.next_delay(uptime=5) == 0.5


def test_exit_is_described_by_code_or_signal():
    assert describe_exit(1) == "exited with code 1"
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(-signal.SIGSEGV) == "killed by SIGSEGV"
    assert describe_exit(-200) == "killed by signal 200"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeChild:
    """Runs until `die(code)`; `start()` gives it a new pid (or fails while `broken`)."""

    def __init__(self, name: str) -> None:
        self.name, self.log = name, Path(f"/data/logs/{name}.log")
        self.pid, self.code, self.starts, self.broken = 100, None, 0, False

    def start(self) -> FakeChild:
        if self.broken:
            raise RuntimeError("port in use")
        self.starts += 1
        self.pid, self.code = self.pid + 1, None
        return self

    def poll(self) -> int | None:
        return self.code

    def die(self, code: int) -> None:
        self.code = code


def _supervised(*names: str):
    clock, said, restarted = Clock(), [], []
    sup = Supervisor(said.append, on_restart=restarted.append, clock=clock)
    children = {n: FakeChild(n) for n in names}
    for c in children.values():
        sup.watch(c)
    return sup, clock, said, restarted, children


def test_a_crashed_child_is_restarted_after_its_pause_and_the_others_are_left_alone():
    sup, clock, said, restarted, kids = _supervised("intake", "registry")
    sup.check()
    assert said == [] and kids["intake"].starts == kids["registry"].starts == 0

    kids["registry"].die(-signal.SIGKILL)
    sup.check()
    assert said == ["registry (pid 100) killed by SIGKILL; restarting it in 1 s; its log: /data/logs/registry.log"]
    clock.now += 0.9
    sup.check()
    assert kids["registry"].starts == 0  # still waiting out its pause
    clock.now += 0.1
    sup.check()
    assert kids["registry"].starts == 1 and said[-1] == "registry restarted (pid 101)"
    assert restarted == [kids["registry"]]  # so `sinergi up` can write the new pid
    assert kids["intake"].starts == 0


def test_crashes_in_a_row_wait_longer_and_a_minute_up_resets_the_pause():
    sup, clock, said, _, kids = _supervised("reporting")
    child = kids["reporting"]
    pauses = []
    for _ in range(4):
        clock.now += 2  # up for 2 s, then it crashes again
        child.die(1)
        sup.check()
        pauses.append(said[-1].split("restarting it in ")[1].split(" s;")[0])
        clock.now += 60  # longer than any pause; the child is down meanwhile, not up
        sup.check()
    assert pauses == ["1", "2", "4", "8"]
    assert "exited with code 1" in said[0]

    clock.now += 61  # this time it stays up for a minute
    child.die(1)
    sup.check()
    assert "restarting it in 1 s" in said[-1]


def test_a_child_that_does_not_start_again_is_retried_with_a_longer_pause():
    sup, clock, said, restarted, kids = _supervised("nats-server")
    child = kids["nats-server"]
    child.die(-signal.SIGKILL)
    sup.check()
    child.broken = True
    clock.now += 1
    sup.check()
    assert said[-1] == ("nats-server did not start again (port in use); trying again in 2 s; "
                        "its log: /data/logs/nats-server.log")
    assert restarted == []
    child.broken = False
    clock.now += 1.5
    sup.check()
    assert child.starts == 0
    clock.now += 0.5
    sup.check()
    assert child.starts == 1 and restarted == [child] and said[-1] == "nats-server restarted (pid 101)"
