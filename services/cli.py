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

from services.kit.settings import SERVICES, Settings
from services.kit.supervisor import Command, Supervisor, describe_exit, stop_all

app = typer.Typer(help="Sinergi: one auditable event backbone for a regency's poverty programs.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
contracts_app = typer.Typer(help="The event contracts (JSON Schema, AsyncAPI).", no_args_is_help=True)
app.add_typer(contracts_app, name="contracts")
console = Console(stderr=True)


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
    from services.kit.streams import connect, ensure_streams

    for svc in services:
        await migrate(svc, settings.db_url(svc))
    nc = await connect(settings, "sinergi-migrate")
    try:
        return await ensure_streams(nc.jetstream(), settings, update=True)
    finally:
        await nc.close()


@app.command("migrate")
def migrate_cmd(service: list[str] | None = typer.Argument(None, help="default: all four")) -> None:
    """Create or upgrade each service's database (alembic) and the JetStream streams."""
    settings = Settings()
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


@app.command()
def up(data_dir: Path = typer.Option(Path(".sinergi"), envvar="SINERGI_DATA_DIR", help="where embedded data lives"),
       nats_url: str | None = typer.Option(None, envvar="SINERGI_NATS_URL",
                                          help="use this NATS instead of the embedded one"),
       database_url: str | None = typer.Option(None, envvar="SINERGI_DATABASE_URL",
                                              help="use this PostgreSQL server instead of the embedded one"),
       http_port_base: int = typer.Option(8001, envvar="SINERGI_HTTP_PORT_BASE",
                                          help="intake on this port, then registry, disbursement, reporting"),
       ) -> None:
    """Start the whole system: NATS, PostgreSQL (embedded unless given) and the four services.

    Prints where everything listens and writes it to DATA_DIR/endpoints.json. A service (or the
    embedded nats-server) that dies is started again, after a pause that grows with each crash
    in a row; the others keep running. Ctrl-C stops the services, then the embedded servers."""
    from services.kit.embedded import EmbeddedNats, EmbeddedPostgres, PortInUse

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    endpoints = data_dir / "endpoints.json"
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
            embedded_nats = EmbeddedNats(data_dir, port=14222).start()
            servers.append(embedded_nats)
            nats_url = embedded_nats.url
        if not database_url:
            pg = EmbeddedPostgres(data_dir).start()
            servers.append(pg)
            database_url = pg.url
        env = {**os.environ, "SINERGI_NATS_URL": nats_url, "SINERGI_DATABASE_URL": database_url,
               "SINERGI_HTTP_PORT_BASE": str(http_port_base)}
        os.environ.update({k: env[k] for k in ("SINERGI_NATS_URL", "SINERGI_DATABASE_URL", "SINERGI_HTTP_PORT_BASE")})
        settings = Settings()
        asyncio.run(_migrate(settings, list(SERVICES)))
        log_dir = data_dir / "logs"
        log_dir.mkdir(exist_ok=True)
        for svc in SERVICES:
            # each service logs (JSON lines) to its own file, so the terminal keeps the table;
            # own session: a terminal's Ctrl-C reaches only `up`, which stops them in order
            procs[svc] = Command(svc, [sys.executable, "-m", "services.cli", "run", svc], env,
                                 log_dir / f"{svc}.log").start()
        _wait_ready({s: settings.port(s) for s in SERVICES}, procs)

        def _publish_endpoints(*_restarted: object) -> None:  # and again after each restart: new pid
            _write_endpoints(endpoints, {
                "nats": nats_url, "database": database_url, "data_dir": str(data_dir), "pid": os.getpid(),
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
        table.add_row("logs", f"{log_dir}/<service>.log")
        table.add_row("endpoints", str(endpoints))
        Console().print(table)  # stdout: what the user asked for; logs go elsewhere
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
    except RuntimeError as exc:  # a server or service did not come up: say which, stop the rest
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
