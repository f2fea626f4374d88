"""Keeps the processes of `sinergi up` running.

A watched process that exits while the system is up is started again after a pause that
doubles with each crash in a row (1 s, 2 s, 4 s ... 30 s at most) and starts over at 1 s once
the process has stayed up for a minute. Each exit and each restart is one line for the
operator; the other processes are not touched.

`Backoff` is the policy, pure (no clock, no processes) so it is tested on its own.
`Supervisor` polls; stopping is left to the caller, which knows the order (services, then
PostgreSQL, then NATS): `stop_all` stops a group of `Command`s.
"""
from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Protocol


@dataclass
class Backoff:
    """How long to wait before restarting a process, given how long it stayed up."""

    first: float = 1.0
    factor: float = 2.0
    cap: float = 30.0
    reset_after: float = 60.0  # up this long: the next crash is a first crash again
    step: int = 0  # doublings so far in this run of crashes

    def next_delay(self, uptime: float) -> float:
        """The pause before the next start of a process that exited after `uptime` seconds."""
        if uptime >= self.reset_after:
            self.step = 0
        delay = min(self.cap, self.first * self.factor ** self.step)
        if delay < self.cap:  # once at the cap, stay there (and never overflow a float)
            self.step += 1
        return delay


def describe_exit(returncode: int) -> str:
    """`exited with code 1`, `killed by SIGKILL` (subprocess gives a signal as -N)."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


class Child(Protocol):
    """A process the supervisor can watch and start again."""

    @property
    def name(self) -> str: ...

    @property
    def log(self) -> Path: ...

    @property
    def pid(self) -> int | None: ...

    def start(self) -> object: ...

    def poll(self) -> int | None:
        """Its exit status once it has exited, None while it runs."""
        ...


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the parent dies (Linux), never be an orphan."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Command:
    """A program run in its own session (a terminal's Ctrl-C reaches only the supervisor),
    its output appended to `log`, in `cwd` if given; it gets SIGTERM if the supervisor itself dies."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path,
                 cwd: Path | None = None) -> None:
        self._name, self.argv, self.env, self._log, self.cwd = name, list(argv), dict(env), log, cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def log(self) -> Path:
        return self._log

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc else None

    def start(self) -> Command:
        with open(self._log, "ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=die_with_parent)
        return self

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None


def stop_all(commands: Sequence[Command], timeout: float = 20) -> None:
    """SIGTERM to every running command at once, then wait; SIGKILL whatever is still up after `timeout`."""
    running = [c.proc for c in commands if c.proc is not None and c.proc.poll() is None]
    for p in running:
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in running:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@dataclass
class _Watched:
    child: Child
    backoff: Backoff
    started: float
    restart_at: float | None = None  # set while it is down, waiting for its next start


class Supervisor:
    """Polls its children; restarts one that exited, after its backoff, and says so through `say`.

    `on_restart(child)` runs after each successful restart (e.g. to publish the new pid)."""

    def __init__(self, say: Callable[[str], None], on_restart: Callable[[Child], None] | None = None,
                 policy: Callable[[], Backoff] = Backoff, clock: Callable[[], float] = time.monotonic) -> None:
        self.say, self.on_restart, self.policy, self.clock = say, on_restart, policy, clock
        self._watched: list[_Watched] = []

    def watch(self, child: Child) -> None:
        """Watch a child that is already running."""
        self._watched.append(_Watched(child, self.policy(), self.clock()))

    def check(self) -> None:
        """One pass: notice exits, start again those whose pause is over."""
        for w in self._watched:
            now = self.clock()
            if w.restart_at is None:
                code = w.child.poll()
                if code is None:
                    continue
                delay = w.backoff.next_delay(now - w.started)
                w.restart_at = now + delay
                self.say(f"{w.child.name} (pid {w.child.pid}) {describe_exit(code)}; "
                         f"restarting it in {delay:g} s; its log: {w.child.log}")
            elif now >= w.restart_at:
                self._restart(w)

    def _restart(self, w: _Watched) -> None:
        try:
            w.child.start()
        except Exception as exc:  # e.g. a server that does not come up: try again later
            delay = w.backoff.next_delay(0)
            w.restart_at = self.clock() + delay
            self.say(f"{w.child.name} did not start again ({exc}); trying again in {delay:g} s; "
                     f"its log: {w.child.log}")
            return
        w.started, w.restart_at = self.clock(), None
        self.say(f"{w.child.name} restarted (pid {w.child.pid})")
        if self.on_restart is not None:
            self.on_restart(w.child)

    def run(self, interval: float = 0.5) -> NoReturn:
        """Supervise until interrupted (KeyboardInterrupt, which `sinergi up` raises on SIGINT/SIGTERM)."""
        while True:
            self.check()
            time.sleep(interval)
