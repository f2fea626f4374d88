"""A person's data on request (UU 27/2022, right of access: answered within 3x24 hours).

`sinergi privacy export NIK --out FILE` collects, from each service's database, every row of
every table that has a NIK column (`nik`, `head_nik`, `reporter_nik`, ...) equal to the NIK.
It reads the schema at run time, so a table a service adds later is included without a
change here. Outbox and inbox are left out: they hold copies of the same facts as events.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from services.kit.settings import SERVICES, Settings

if TYPE_CHECKING:
    import typer

_NIK_COLUMNS = sa.text("""
    select table_name, column_name from information_schema.columns
    where table_schema = 'public' and (column_name = 'nik' or column_name like '%\\_nik' escape '\\')
      and table_name not in ('outbox', 'inbox', 'alembic_version')
    order by table_name, column_name""")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def check_nik(nik: str) -> None:
    if not re.fullmatch(r"\d{16}", nik):
        raise ValueError("a NIK has 16 digits")


async def export_person(settings: Settings, nik: str) -> dict[str, Any]:
    check_nik(nik)
    out: dict[str, Any] = {"nik": nik, "generated_at": dt.datetime.now(dt.UTC).isoformat(),
                 "legal_basis": "UU 27/2022 (Pelindungan Data Pribadi): hak akses dan salinan data", "services": {}}
    for svc in SERVICES:
        engine = create_async_engine(settings.db_url(svc))
        try:
            async with engine.connect() as conn:
                found: dict[str, list[dict[str, Any]]] = {}
                for table, column in (await conn.execute(_NIK_COLUMNS)).all():
                    rows = await conn.execute(sa.text(f"select * from {_quote(table)} where {_quote(column)} = :nik"),
                                              {"nik": nik})
                    hits = [dict(r._mapping) for r in rows]
                    if hits:
                        found.setdefault(table, []).extend(hits)
                out["services"][svc] = found
        except Exception as exc:  # a service not deployed here, or its database unreachable: say so
            out["services"][svc] = {"_unavailable": f"{type(exc).__name__}: {str(exc)[:200]}"}
        finally:
            await engine.dispose()
    return out


def register_cli(app: typer.Typer) -> None:
    import asyncio

    import typer
    from rich.console import Console

    privacy_app = typer.Typer(help="Personal data requests (UU 27/2022).", no_args_is_help=True)
    app.add_typer(privacy_app, name="privacy")

    @privacy_app.command("export")
    def export(nik: str = typer.Argument(..., help="the person's NIK"),
               out: Path = typer.Option(..., "--out", help="JSON file to write (mode 0600)")) -> None:
        """Everything Sinergi holds about one person, from every service database, as JSON."""
        from services.kit import local
        try:
            check_nik(nik)  # a wrong NIK is said before looking for the system
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        data = asyncio.run(export_person(local.settings(), nik))
        out.write_text(json.dumps(data, indent=2, default=str, ensure_ascii=False))
        os.chmod(out, 0o600)
        n = sum(len(rows) for s in data["services"].values() for k, rows in s.items() if not k.startswith("_"))
        Console(stderr=True).print(f"[green]wrote {out}: {n} records from {len(data['services'])} services")
