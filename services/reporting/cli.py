"""`sinergi reporting ...`: operator commands for the reporting service."""
from __future__ import annotations

import asyncio

import typer
from rich.console import Console

reporting_app = typer.Typer(help="Reporting read models and the monthly recap.", no_args_is_help=True)
console = Console(stderr=True)


@reporting_app.command("rebuild")
def rebuild_cmd() -> None:
    """Rebuild every read model from the REGISTRY, INTAKE and DISBURSEMENT streams, from the
    first event, into fresh tables, then swap them in (the running service keeps going)."""
    from services.kit import local
    from services.reporting.rebuild import rebuild

    settings = local.settings(local.service_user("reporting"))

    async def _run():
        # NATS down: one clear line within seconds (the rebuild's own connection would keep retrying)
        await (await local.connect(settings, "sinergi-reporting-check")).close()
        return await rebuild(settings)
    progress = asyncio.run(_run())
    for stream, n in sorted(progress.events.items()):
        console.print(f"[green]{stream}: {n} events, up to sequence {progress.position.get(stream, 0)}")
    console.print(f"[green]read models rebuilt and swapped in {progress.seconds:.1f} s")


@reporting_app.command("recap")
def recap_cmd(period: str = typer.Argument(..., help="the month, YYYY-MM"),
              fmt: str = typer.Option("json", "--format", help="json or csv")) -> None:
    """Print the monthly recap from the read models (JSON or CSV) to standard output."""
    import json

    from services.kit import local
    from services.reporting import domain, exports, report

    try:
        p = domain.parse_period(period)
    except domain.BadPeriod as exc:
        raise typer.BadParameter(str(exc)) from None

    async def _run() -> dict:
        from services.kit.db import make_engine, sessions
        engine = make_engine(local.settings(local.service_user("reporting")).db_url("reporting"), pool_size=1)
        try:
            async with sessions(engine)() as s:
                return await report.monthly(s, p, companion_names=True)  # an operator's command
        finally:
            await engine.dispose()
    data = asyncio.run(_run())
    typer.echo(exports.to_csv(data) if fmt == "csv" else json.dumps(data, indent=2, ensure_ascii=False))


def register(app: typer.Typer) -> None:
    app.add_typer(reporting_app, name="reporting")
