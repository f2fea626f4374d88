"""`sinergi intake ...`: operator commands (escalate overdue cases now, list them)."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import typer
from rich.console import Console

intake_app = typer.Typer(help="Puskesos cases and home visits.", no_args_is_help=True)
console = Console(stderr=True)


def _when(now: str | None) -> dt.datetime | None:
    if now is None:
        return None
    try:
        t = dt.datetime.fromisoformat(now)
    except ValueError:
        raise typer.BadParameter(f"{now!r} is not an ISO date-time, e.g. 2026-11-30T09:00:00+07:00") from None
    if t.tzinfo is None:
        raise typer.BadParameter("--now needs a timezone, e.g. 2026-11-30T09:00:00+07:00")
    return t


@intake_app.command("escalate")
def escalate_cmd(now: str | None = typer.Option(None, help="evaluate deadlines at this time (default: now)")) -> None:
    """Move every overdue case one level up the SLRT chain (the service also does this on a timer).
    The events go to the outbox; the running intake service publishes them."""
    from services.intake import cases, store
    from services.intake.config import IntakeSettings
    from services.kit import local
    from services.kit.runtime import Kit

    when = _when(now)

    async def _run() -> list[dict[str, Any]]:
        # a kit that is never started: only its database is used (the unit of work's wake-up
        # of a relay that does not run is harmless; the running service's relay publishes)
        kit = Kit("intake", local.settings(local.service_user("intake")), store.metadata)
        try:
            return await cases.escalate_overdue(kit, IntakeSettings(), when)
        finally:
            await kit.engine.dispose()
    done = asyncio.run(_run())
    typer.echo(json.dumps({"escalated": len(done), "cases": done}, indent=2))
    console.print(f"[green]{len(done)} overdue case(s) escalated")


def register(app: typer.Typer) -> None:
    app.add_typer(intake_app, name="intake")
