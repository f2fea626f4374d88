"""The `sinergi` command-line program."""
from __future__ import annotations

import asyncio
import importlib
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
import typer
from rich.console import Console
from rich.table import Table

from services.kit import local
from services.kit.settings import SERVICES, Settings
from services.kit.supervisor import Command, Supervisor, describe_exit, stop_all

app = typer.Typer(help="Sinergi: one auditable event backbone for a regency's poverty programs.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
contracts_app = typer.Typer(help="The event contracts (JSON Schema, AsyncAPI).", no_args_is_help=True)
app.add_typer(contracts_app, name="contracts")
console = Console(stderr=True)


@app.callback()
def _root(data_dir: Path | None = typer.Option(
        None, "--data-dir", envvar="SINERGI_DATA_DIR",
        help="the data dir of `sinergi up` (default: ./.sinergi if it exists); every command finds the "
             "running system and its credentials there")) -> None:
    local.choose(data_dir)


def _check_service(service: str) -> str:
    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}")
    return service


@app.command()
def run(service: str = typer.Argument(..., help="intake, registry, disbursement or reporting",
                                      callback=_check_service),
        port: int | None = typer.Option(None, help="HTTP port (default: 8001-8004 by service)"),
        migrate_first: bool = typer.Option(False, "--migrate", help="run this service's migrations first")) -> None:
    """Run one service (as docker-compose does)."""
    import uvicorn

    from services.kit import logging as klog

    settings = Settings()
    klog.configure(service, settings.log_level, settings.log_format)
    if migrate_first:
        asyncio.run(_migrate(settings, [service]))
    module = importlib.import_module(f"services.{service}.app")
    uvicorn.run(module.create_app(settings), host=settings.http_host, port=port or settings.port(service),
                log_config=None, access_log=False, timeout_graceful_shutdown=10)


async def _migrate(settings: Settings, services: list[str]) -> list[str]:
    from services.kit.migrations import migrate
    from services.kit.streams import ensure_streams

    for svc in services:
        await migrate(svc, settings.db_url(svc))
    nc = await local.connect(settings, "sinergi-migrate")
    try:
        return await ensure_streams(nc.jetstream(), settings, update=True)
    finally:
        await nc.close()


@app.command("migrate")
def migrate_cmd(service: list[str] | None = typer.Argument(None, help="default: all four")) -> None:
    """Create or upgrade each service's database (alembic) and the JetStream streams."""
    settings = local.settings(local.OPS)
    services = service or list(SERVICES)
    for s in services:
        _check_service(s)
    done = asyncio.run(_migrate(settings, services))
    for s in services:
        console.print(f"[green]database {settings.db_name(s)} at head")
    for line in done:
        console.print(f"[green]stream {line}")


@contracts_app.command("export")
def contracts_export(directory: Path = typer.Argument(..., help="where to write the files")) -> None:
    """Write a JSON Schema per event and message, and one AsyncAPI document."""
    from contracts.export import export

    for path in export(directory):
        console.print(f"wrote {path}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _wait_ready(ports: dict[str, int], procs: Mapping[str, Command], timeout: float = 90) -> None:
    deadline = time.time() + timeout
    pending = dict(ports)
    while pending and time.time() < deadline:
        for svc, port in list(pending.items()):
            code = procs[svc].poll()
            if code is not None:
                raise RuntimeError(f"{svc} {describe_exit(code)}; its log: {procs[svc].log}\n{_tail(procs[svc].log)}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    del pending[svc]
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    if pending:
        raise RuntimeError(f"not ready after {timeout:.0f} s: {', '.join(pending)}")


def _busy_ports(ports: list[int], host: str = "127.0.0.1") -> list[int]:
    import socket

    busy = []
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                busy.append(port)
    return busy


def _write_endpoints(path: Path, data: dict) -> None:
    import json

    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a file


def _sinergi_command(data_dir: Path) -> str:
    """How the user runs `sinergi` from here: `.venv/bin/sinergi` beside scripts/up, and
    `--data-dir` unless the data dir is the one found by default."""
    exe = Path(sys.executable).parent / "sinergi"
    try:
        cmd = str(exe.relative_to(Path.cwd()))
    except ValueError:
        cmd = str(exe) if exe.exists() else "sinergi"
    if data_dir != local.DEFAULT_DIR.resolve():
        cmd += f" --data-dir {data_dir}"
    return cmd


def _first_steps(system: local.LocalSystem, first_start: bool, settings: Settings) -> list[str]:
    """What `up` says after the table: the first account to make, and (at the first start) what
    the development default does not protect. Paths and commands only: never a secret."""
    from services.kit.auth import Role
    from services.kit.users import UsersFile

    lines = []
    if not UsersFile(system.users_file).load():
        lines += ["No staff accounts yet. Create the first one (it asks for a password):",
                  f"  {_sinergi_command(system.data_dir)} users add admin --role kabupaten",
                  f"  (roles: {', '.join(Role)}; `users add --help` for areas and programs)"]
    reach = ("loopback only (127.0.0.1): other machines cannot reach it" if settings.http_host == "127.0.0.1"
             else f"HTTP listens on {settings.http_host}: other machines can reach it")
    if first_start:
        lines += [
            "This is the development default, for one machine. It does not protect:",
            f"  - against other users of this machine: the secrets (token signing secret, audit signing key, "
            f"pseudonym key, NATS passwords) are files in {system.secrets_dir} and the staff accounts in "
            f"{system.users_file} (mode 0600, readable by you and root), and PostgreSQL lets any local account "
            f"that reaches its socket in {system.data_dir / 'pg'} connect without a password;",
            f"  - the traffic: plain HTTP and plain NATS, no TLS; {reach};",
            f"  - against losing this machine: one NATS, one PostgreSQL, no backups; all data is in {system.data_dir}.",
            "For a regency: deploy/ and docs/DEPLOY.md (TLS, one credential per party, backups).",
        ]
    else:
        lines.append(f"Development default: plain HTTP and NATS, {reach}; secrets in {system.secrets_dir} "
                     "(docs/SECURITY.md).")
    return lines


@app.command()
def up(data_dir: Path | None = typer.Option(None, "--data-dir", envvar="SINERGI_DATA_DIR",
                                            help="where embedded data and the generated secrets live "
                                                 "(default ./.sinergi)"),
       nats_url: str | None = typer.Option(None, envvar="SINERGI_NATS_URL",
                                          help="use this NATS instead of the embedded one"),
       database_url: str | None = typer.Option(None, envvar="SINERGI_DATABASE_URL",
                                              help="use this PostgreSQL server instead of the embedded one"),
       http_port_base: int = typer.Option(8001, envvar="SINERGI_HTTP_PORT_BASE",
                                          help="intake on this port, then registry, disbursement, reporting"),
       ) -> None:
    """Start the whole system: NATS, PostgreSQL (embedded unless given) and the four services.

    At the first start it generates the secrets, the NATS identities and an empty staff accounts
    file under DATA_DIR (see `sinergi users add`). Prints where everything listens and writes it
    to DATA_DIR/endpoints.json, where every other `sinergi` command finds it. A service (or the
    embedded nats-server) that dies is started again, after a pause that grows with each crash
    in a row; the others keep running. Ctrl-C stops the services, then the embedded servers."""
    from services.kit.embedded import EmbeddedNats, EmbeddedPostgres, PortInUse

    data_dir = (data_dir or local.given() or local.DEFAULT_DIR).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    system, first_start = local.LocalSystem.create(data_dir)
    running = system.running_pid()
    if running:
        console.print(f"Sinergi is already running in {data_dir} (sinergi up, pid {running}): use it, or stop it "
                      "first (Ctrl-C in its terminal)", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    endpoints = system.endpoints_file
    endpoints.unlink(missing_ok=True)
    servers: list = []  # embedded NATS, then PostgreSQL: stopped in the reverse order
    procs: dict[str, Command] = {}
    stopping = False

    def _stop() -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        # a second Ctrl-C must not cut the orderly stop short (and leave servers running)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        console.print("[yellow]stopping...")
        endpoints.unlink(missing_ok=True)
        stop_all(list(procs.values()), timeout=20)
        for srv in reversed(servers):  # services first, then PostgreSQL, then NATS
            try:
                srv.stop()
            except Exception as exc:  # keep stopping the others
                console.print(f"[red]could not stop {type(srv).__name__}: {exc}")
        console.print("[green]stopped")

    ports = {svc: http_port_base + i for i, svc in enumerate(SERVICES)}
    busy = _busy_ports(list(ports.values()))
    if busy:
        console.print(f"[red]HTTP port(s) {', '.join(map(str, busy))} already in use: "
                      "choose another base with --http-port-base or SINERGI_HTTP_PORT_BASE")
        raise typer.Exit(2)

    def _interrupt(*_a) -> None:
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        embedded_nats = None
        if not nats_url:
            # as in production: one NATS user per service, and fsync before every acknowledgement
            embedded_nats = EmbeddedNats(data_dir, port=14222, sync_always=True, auth=system.write_nats_auth()).start()
            servers.append(embedded_nats)
            nats_url = embedded_nats.url
        if not database_url:
            pg = EmbeddedPostgres(data_dir).start()
            servers.append(pg)
            database_url = pg.url
        where = {"nats_url": nats_url, "database_url": database_url, "http_port_base": http_port_base,
                 "nats_users": embedded_nats is not None}  # a NATS of your own: credentials from SINERGI_NATS_*
        # no .env: the services run in the data dir and read none, so `up` migrates what they will use
        settings = Settings(_env_file=None, **system.values(local.OPS, **where))
        asyncio.run(_migrate(settings, list(SERVICES)))
        log_dir = data_dir / "logs"
        log_dir.mkdir(exist_ok=True)
        for svc in SERVICES:
            # each service logs (JSON lines) to its own file, so the terminal keeps the table;
            # own session: a terminal's Ctrl-C reaches only `up`, which stops them in order.
            # Run from the installed package whatever the current folder holds: -P keeps the
            # current folder off sys.path (a `contracts/` export there shadowed the package) and
            # the data dir as working directory keeps a project's .env out of the services.
            procs[svc] = Command(svc, [sys.executable, "-P", "-m", "services.cli", "run", svc],
                                 {**os.environ, **system.service_env(svc, **where)}, log_dir / f"{svc}.log",
                                 cwd=data_dir).start()
        _wait_ready({s: settings.port(s) for s in SERVICES}, procs)

        def _publish_endpoints(*_restarted: object) -> None:  # and again after each restart: new pid
            _write_endpoints(endpoints, {
                "nats": nats_url, "database": database_url, "data_dir": str(data_dir), "pid": os.getpid(),
                "http_port_base": http_port_base, "nats_users": where["nats_users"],
                "services": {svc: {"url": f"http://127.0.0.1:{settings.port(svc)}", "pid": procs[svc].pid}
                             for svc in SERVICES},
                "embedded": {type(srv).__name__: srv.pid for srv in servers},
                "logs": {svc: str(c.log) for svc, c in procs.items()},
            })
        _publish_endpoints()
        table = Table(title="Sinergi is up (Ctrl-C stops it)",
                      caption="every service: /docs (OpenAPI), /healthz (alive), /readyz (NATS and database)")
        table.add_column("what")
        table.add_column("where", overflow="fold")  # never cut a URL or path short
        table.add_row("NATS", nats_url)
        table.add_row("PostgreSQL", database_url)
        for svc in SERVICES:
            table.add_row(svc, f"http://127.0.0.1:{settings.port(svc)}")
        table.add_row("data", str(data_dir))
        table.add_row("secrets", f"{system.secrets_dir} (NATS users, keys), {system.users_file} (staff)")
        table.add_row("logs", f"{log_dir}/<service>.log")
        table.add_row("endpoints", str(endpoints))
        Console().print(table)  # stdout: what the user asked for; logs go elsewhere
        for line in _first_steps(system, first_start, settings):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        sys.stdout.flush()

        def _say(line: str) -> None:  # one line per crash and per restart, on the terminal
            console.print(f"{time.strftime('%H:%M:%S')} {line}", style="yellow", markup=False, highlight=False,
                          soft_wrap=True)  # one line, however narrow the terminal
        supervisor = Supervisor(_say, on_restart=_publish_endpoints)
        for child in [*([embedded_nats] if embedded_nats else []), *procs.values()]:
            supervisor.watch(child)
        supervisor.run()  # until Ctrl-C or SIGTERM
    except KeyboardInterrupt:
        pass
    except PortInUse as exc:  # the data dir's NATS port is taken: say by whom and what to do
        console.print(str(exc), style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except (RuntimeError, local.Unreachable) as exc:  # a server or service did not come up: say which, stop the rest
        console.print(str(exc), style="red", markup=False, highlight=False)  # log lines hold [brackets]
        raise typer.Exit(1) from None
    finally:
        _stop()


# Each service may add its own commands (e.g. `sinergi agency publish`, `sinergi audit verify`):
# a module listed here that exists must define `register(app: typer.Typer) -> None`.
PLUGINS = ("services.registry.cli", "services.intake.cli", "services.disbursement.cli",
           "services.reporting.cli", "services.kit.deploy", "services.kit.ops")


def _load_plugins() -> None:
    import importlib.util

    for name in PLUGINS:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(app)


_load_plugins()


def _database(settings: Settings | None) -> str:
    if settings is None:
        return "PostgreSQL"
    from sqlalchemy.engine import make_url
    return f"PostgreSQL at {make_url(settings.database_url).render_as_string(hide_password=True)}"


def explain(exc: BaseException) -> str | None:
    """One line for a failure the user can do something about (a server down, streams or
    databases not created, no running system here); None for anything else, which is a bug and
    keeps its traceback."""
    import httpx
    from nats import errors as nats_errors
    from nats.js import errors as js_errors
    from sqlalchemy.exc import DBAPIError

    from services.kit.users import UserError

    if isinstance(exc, BaseExceptionGroup):
        return explain(exc.exceptions[0])
    if isinstance(exc, local.NoSystem | local.Unreachable | UserError):
        return str(exc)
    try:
        settings: Settings | None = local.settings()
    except Exception:
        settings = None
    nats_at = f"NATS at {settings.nats_url}" if settings else "NATS"
    migrate = f"run `{_sinergi_command(local.current().data_dir) if local.current() else 'sinergi'} migrate`"
    if isinstance(exc, js_errors.NoStreamResponseError):
        return f"{nats_at} has no JetStream stream for that subject ({local.where()}): {migrate}"
    if isinstance(exc, js_errors.NotFoundError):
        return f"{nats_at}: a stream or consumer is missing ({exc.description or exc}; {local.where()}): {migrate}"
    if isinstance(exc, nats_errors.NoServersError | nats_errors.ConnectionClosedError | nats_errors.AuthorizationError):
        return local.nats_failure(settings, exc) if settings else f"NATS: {exc}"
    if isinstance(exc, nats_errors.TimeoutError | nats_errors.NoRespondersError):
        return f"{nats_at} did not answer in time ({local.where()}): is Sinergi running and NATS healthy?"
    if isinstance(exc, httpx.ConnectError | httpx.TimeoutException):
        return (f"cannot reach {exc.request.url.copy_with(query=None)} ({type(exc).__name__}): is Sinergi running? "
                "Start it with `scripts/up`")
    if isinstance(exc, DBAPIError) and "does not exist" in str(exc.orig):
        return f"{_database(settings)}: {str(exc.orig).split(')')[-1].strip()} ({local.where()}): {migrate}"
    if isinstance(exc, DBAPIError):
        return f"{_database(settings)} failed ({local.where()}): {str(exc.orig).split(')')[-1].strip()}"
    if isinstance(exc, ConnectionRefusedError) or (isinstance(exc, FileNotFoundError) and not exc.filename):
        # asyncpg's connect raises the bare OSError (a refused port, or a unix socket that is gone)
        return (f"cannot reach {_database(settings)} ({local.where()}): {exc.strerror}. Is Sinergi running? "
                "Start it with `scripts/up`")
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return None


def main() -> None:
    """`sinergi`: a failure the user can act on is one line on stderr and exit status 1, never a
    traceback (a wrong command line is typer's usage message, exit 2); anything else is a bug
    and keeps its traceback."""
    try:
        app()
    except Exception as exc:
        line = explain(exc)
        if line is None:
            raise
        console.print(line, style="red", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
