"""`sinergi agency publish FILE.csv --program P`: an agency without a developer sends its
enrolment list from a spreadsheet export and gets every receipt back.

Columns (header row, any order; docs/REGISTRY.md): reference_id, nik, no_kk, name, sex,
birth_date, village_code, address, enrolment_status, status_change_date,
is_head_of_household, and optionally message_id and programme_identifier. Without a
message_id column each row gets a stable one from its content, so publishing the same file
again is recognised as the same messages (the registry answers each with its first receipt).
Each row goes out with `Nats-Msg-Id: <program>:<message_id>`: JetStream de-duplicates that
header across every program's reports, so the program scopes it.
"""
from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.kit import local
from services.kit.settings import Settings

COLUMNS = ["reference_id", "nik", "no_kk", "name", "sex", "birth_date", "village_code", "address",
           "enrolment_status", "status_change_date", "is_head_of_household"]
TRUE = {"true", "1", "ya", "y", "yes"}
FALSE = {"false", "0", "tidak", "t", "n", "no", ""}

console = Console(stderr=True)


def row_to_report(row: dict[str, str], program: str) -> dict:
    """One CSV row as an enrolment report. Values are passed on as written: the registry checks
    every rule and names each failure in the receipt."""
    rep = {k: (v or "").strip() for k, v in row.items() if k}
    head = rep.pop("is_head_of_household", "").lower()
    rep["is_head_of_household"] = True if head in TRUE else False if head in FALSE else head
    rep.setdefault("programme_identifier", program)
    if not rep.get("message_id"):
        content = json.dumps({k: rep[k] for k in sorted(rep)}, sort_keys=True)
        rep["message_id"] = f"{program}-{hashlib.sha256(content.encode()).hexdigest()[:32]}"
    return rep


def msg_id(program: str, message_id: str) -> str:
    """The Nats-Msg-Id of a report: JetStream de-duplicates it per stream, across programs."""
    return f"{program}:{message_id}"


def read_reports(path: Path, program: str) -> list[dict]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("nik", "name") if c not in (reader.fieldnames or [])]
        if missing:
            raise typer.BadParameter(f"{path} has no {', '.join(missing)} column; expected columns: "
                                     f"{', '.join(COLUMNS)}")
        return [row_to_report(r, program) for r in reader]


async def publish_file(settings: Settings, path: Path, program: str, out: Path, timeout: float) -> dict:
    """Publish every row, wait for every receipt; write rejected rows to `out`. Returns the summary."""
    reports = read_reports(path, program)
    by_id = {r["message_id"]: (i + 2, r) for i, r in enumerate(reports)}  # CSV line numbers (header is 1)
    names = settings.names
    nc = await local.connect(settings, "sinergi-agency-publish")
    receipts: dict[str, dict] = {}
    done = asyncio.Event()

    async def on_receipt(msg) -> None:
        try:
            batch = json.loads(msg.data)  # contracts.agency.ReceiptBatch
        except ValueError:
            return
        for r in batch.get("receipts", []) if isinstance(batch, dict) else []:
            if r.get("message_id") in by_id and r["message_id"] not in receipts:
                receipts[r["message_id"]] = r
        if len(receipts) >= expected:
            done.set()

    expected = len(reports)
    duplicates: list[str] = []
    try:
        sub = await nc.subscribe(names.receipts(program), cb=on_receipt, pending_msgs_limit=10_000_000,
                                 pending_bytes_limit=1 << 30)
        await nc.flush()
        js = nc.jetstream()
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=False) as progress:
            sent = progress.add_task("published", total=len(reports))
            got = progress.add_task("receipts ", total=len(reports))
            for i in range(0, len(reports), 500):
                chunk = reports[i:i + 500]
                acks = await asyncio.gather(*(js.publish(names.enrolments(program), json.dumps(r).encode(),
                                                         headers={"Nats-Msg-Id": msg_id(program, r["message_id"])})
                                              for r in chunk))
                # a re-sent row inside JetStream's de-duplication window is dropped by the server:
                # its receipt went out the first time, so do not wait for another
                duplicates += [r["message_id"] for r, a in zip(chunk, acks, strict=True) if a.duplicate]
                progress.update(sent, advance=len(chunk))
                progress.update(got, completed=len(receipts))
            expected = len(reports) - len(duplicates)
            if len(receipts) >= expected:
                done.set()
            deadline = asyncio.get_running_loop().time() + timeout
            while not done.is_set() and asyncio.get_running_loop().time() < deadline:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), 0.2)
                progress.update(got, completed=len(receipts))
            progress.update(got, completed=len(receipts))
        await sub.unsubscribe()
    finally:
        await nc.close()

    rejected = [(by_id[m][0], r) for m, r in receipts.items() if r.get("status") == "rjct"]
    rejected.sort(key=lambda x: x[0])
    with out.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["line", "message_id", "reference_id", "nik", "status_reason_code", "status_reason_message"])
        for line, r in rejected:
            nik = by_id[r["message_id"]][1].get("nik", "")
            for reason in r.get("status_reasons") or [{}]:
                w.writerow([line, r["message_id"], r.get("reference_id", ""), nik,
                            reason.get("status_reason_code", ""), reason.get("status_reason_message", "")])
    dup_set = set(duplicates)
    missing = [by_id[m][0] for m in by_id if m not in receipts and m not in dup_set]
    return {"rows": len(reports), "accepted": sum(1 for r in receipts.values() if r.get("status") == "succ"),
            "rejected": len(rejected), "duplicates": len(duplicates), "missing": len(missing),
            "missing_lines": missing[:20], "rejected_rows": rejected, "out": str(out)}


def register(app: typer.Typer) -> None:
    agency = typer.Typer(help="Commands for program agencies (enrolment lists in, receipts back).",
                         no_args_is_help=True)
    app.add_typer(agency, name="agency")

    @agency.command("publish")
    def publish(file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True,
                                            help="CSV with a header row; columns in docs/REGISTRY.md"),
                program: str = typer.Option(..., "--program", "-p", help="programme_identifier, e.g. pkh"),
                rejected_csv: Path = typer.Option(None, "--rejected", help="where to write rejected rows "
                                                  "(default: FILE.rejected.csv)"),
                timeout: float = typer.Option(300.0, help="seconds to wait for the last receipt")) -> None:
        """Publish an enrolment list to the registry, wait for every receipt, list the rejected rows."""
        if not program.replace("_", "").isalnum() or not program.islower():
            raise typer.BadParameter("program must be lower case letters, digits and _, e.g. pkh")
        out = rejected_csv or file.with_suffix(".rejected.csv")
        summary = asyncio.run(publish_file(local.settings(), file, program, out, timeout))
        table = Table(title=f"{file.name} -> {program}")
        table.add_column("rows")
        table.add_column("accepted", style="green")
        table.add_column("rejected", style="red")
        table.add_column("already sent")
        table.add_column("no receipt")
        table.add_row(*(str(summary[k]) for k in ("rows", "accepted", "rejected", "duplicates", "missing")))
        console.print(table)
        for line, r in summary["rejected_rows"][:50]:
            reasons = "; ".join(f"{x['status_reason_code']}: {x['status_reason_message']}"
                                for x in r.get("status_reasons", []))
            console.print(f"[red]line {line}[/red] ({r.get('reference_id') or r['message_id']}): {reasons}")
        if summary["rejected"] > 50:
            console.print(f"... and {summary['rejected'] - 50} more")
        if summary["rejected"]:
            console.print(f"rejected rows with reasons written to {summary['out']}")
        if summary["missing"]:
            console.print(f"[yellow]no receipt within {timeout:.0f} s for lines {summary['missing_lines']}: "
                          "is the registry running? Publishing the file again is safe.")
        raise typer.Exit(0 if not summary["rejected"] and not summary["missing"] else 1)

    registry = typer.Typer(help="Registry operator commands.", no_args_is_help=True)
    app.add_typer(registry, name="registry")

    @registry.command("expire-verifications")
    def expire_verifications(now: str | None = typer.Option(
            None, help="judge validity at this time, ISO with a timezone (default: now); for an operator's "
                       "catch-up or a rehearsal, never a staff route")) -> None:
        """Announce every verification past its program's validity now (the service also does this
        on a timer); each expiry is announced once, whoever runs it."""
        import datetime as dt

        from services.kit.runtime import Kit
        from services.registry import programs, store

        when = None
        if now is not None:
            try:
                when = dt.datetime.fromisoformat(now)
            except ValueError:
                raise typer.BadParameter(f"{now!r} is not an ISO date-time, e.g. 2026-11-30T09:00:00+07:00") from None
            if when.tzinfo is None:
                raise typer.BadParameter("--now needs a timezone, e.g. 2026-11-30T09:00:00+07:00")

        async def _run() -> int:
            # a kit that is never started: only its database; the running registry's relay publishes
            kit = Kit("registry", local.settings(local.service_user("registry")), store.metadata)
            try:
                return await programs.expire_verifications(kit, when)
            finally:
                await kit.engine.dispose()
        count = asyncio.run(_run())
        typer.echo(json.dumps({"expired": count}))
        console.print(f"[green]{count} verification expiries announced")
