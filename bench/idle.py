"""Idle cost: how much CPU the whole system uses when nothing happens.

    .venv/bin/python bench/idle.py [--seconds 60] [--settle 20] [--attach DATA_DIR]

Starts `sinergi up` on embedded NATS and PostgreSQL in a throw-away data dir (or, with
`--attach`, measures a system already running from DATA_DIR), lets it settle, then reads the
CPU time (user + system, /proc/<pid>/stat) of every process of the system over `--seconds`:
`sinergi up` itself, the four services, nats-server and every PostgreSQL process. Prints each
one's share of one core and the total against the goal (< 3 % of one core, issue 13).
Processes that start during the window count with all their time; ones that end are lost
(no traffic: the set does not change).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL = 3.0  # percent of one core
TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds used so far) of a process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # the name may hold spaces: skip past it
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def _processes() -> dict[int, tuple[int, float]]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            s = _stat(int(entry))
            if s is not None:
                out[int(entry)] = s
    return out


def _tree(roots: dict[int, str], procs: dict[int, tuple[int, float]]) -> dict[int, str]:
    """Every process under the roots, labelled with its root's name."""
    labels = dict(roots)
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _cpu) in procs.items():
            if pid not in labels and ppid in labels:
                labels[pid] = labels[ppid]
                changed = True
    return {p: n for p, n in labels.items() if p in procs}


def _roots(endpoints: dict) -> dict[int, str]:
    roots = {int(endpoints["pid"]): "sinergi up"}
    for svc, info in endpoints["services"].items():
        roots[int(info["pid"])] = svc
    for kind, pid in endpoints.get("embedded", {}).items():
        if pid:
            roots[int(pid)] = "nats-server" if "Nats" in kind else "postgresql"
    return roots


def _free_base() -> int:
    for base in range(18101, 19000, 10):
        ok = True
        for port in range(base, base + 4):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
        if ok:
            return base
    raise SystemExit("no four free ports between 18101 and 19000")


def _start(data_dir: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("SINERGI_NATS_URL", "SINERGI_DATABASE_URL")}
    env["SINERGI_HTTP_PORT_BASE"] = str(_free_base())
    log = open(data_dir / "up.log", "wb")  # noqa: SIM115 - the child keeps it
    return subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--data-dir", str(data_dir)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_endpoints(path: Path, proc: subprocess.Popen[bytes] | None, timeout: float = 240) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"sinergi up exited with {proc.returncode}; see {path.parent / 'up.log'}")
        if path.exists():
            return json.loads(path.read_text())
        time.sleep(0.5)
    raise SystemExit(f"{path} did not appear within {timeout:.0f} s")


def measure(endpoints: dict, seconds: float) -> dict[str, float]:
    """CPU seconds per process group over `seconds`."""
    roots = _roots(endpoints)
    before = _processes()
    labels0 = _tree(roots, before)
    time.sleep(seconds)
    after = _processes()
    labels = {**labels0, **_tree(roots, after)}
    used: dict[str, float] = {}
    for pid, name in labels.items():
        if pid not in after:
            continue
        start = before[pid][1] if pid in before else 0.0
        used[name] = used.get(name, 0.0) + after[pid][1] - start
    return used


def report(used: dict[str, float], seconds: float) -> float:
    total = sum(used.values())
    print(f"idle CPU over {seconds:.0f} s (share of one core):")
    for name, cpu in sorted(used.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<14} {cpu:7.2f} s  {100 * cpu / seconds:6.2f} %")
    pct = 100 * total / seconds
    verdict = "within" if pct < GOAL else "ABOVE"
    print(f"  {'total':<14} {total:7.2f} s  {pct:6.2f} %   ({verdict} the goal of {GOAL:.0f} % of one core)")
    return pct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="measuring window")
    ap.add_argument("--settle", type=float, default=20.0, help="wait this long after start-up before measuring")
    ap.add_argument("--attach", type=Path, help="measure the system running from this data dir instead")
    args = ap.parse_args()
    proc = None
    if args.attach:
        data_dir = args.attach.resolve()
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="sinergi-idle-"))
        proc = _start(data_dir)
    try:
        endpoints = _wait_endpoints(data_dir / "endpoints.json", proc)
        time.sleep(args.settle)
        report(measure(endpoints, args.seconds), args.seconds)
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGINT)  # `up` stops the services, PostgreSQL, then NATS
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
