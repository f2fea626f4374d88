"""`sinergi cycle ...` for program managers and `sinergi audit ...` for auditors."""
from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from services.disbursement.audit import Report

console = Console(stderr=True)
out = Console()


def _token(token: str | None, user: str) -> str:
    if token:
        return token
    # on the regency's server the operator holds the signing secret: mint a short-lived
    # program_manager token for the named user (the API still checks it like any other)
    import datetime as dt

    from services.kit import local
    from services.kit.auth import Principal, Role, issue_token
    from services.kit.users import UsersFile
    settings = local.settings()
    principal = Principal(user, Role.program_manager, "")
    if settings.users_file:  # the service checks the account: act as it is, or say what is missing
        principal = UsersFile(settings.users_file).acting_as(user)
    return issue_token(principal, settings.auth_secret, dt.timedelta(minutes=30))


def register(app: typer.Typer) -> None:
    cycle = typer.Typer(help="Payment cycles (program managers).", no_args_is_help=True)
    audit = typer.Typer(help="The audit stream (auditors).", no_args_is_help=True)
    app.add_typer(cycle, name="cycle")
    app.add_typer(audit, name="audit")

    @cycle.command("run")
    def cycle_run(program: str = typer.Argument(..., help="program code, e.g. kamalia_merekah"),
                  period: str = typer.Argument(..., help="YYYY-MM"),
                  dry_run: bool = typer.Option(False, "--dry-run", help="preview totals per source; write nothing"),
                  url: str | None = typer.Option(None, envvar="SINERGI_DISBURSEMENT_URL",
                                                    help="the disbursement service (default http://127.0.0.1:<port>)"),
                  token: str | None = typer.Option(None, envvar="SINERGI_TOKEN", help="bearer token"),
                  user: str = typer.Option(os.environ.get("USER", "operator"), help="who runs it (no token given)"),
                  ) -> None:
        """Preview or commit a cycle through the service's HTTP API (idempotent: run it again safely)."""
        from services.kit import local
        base = url or local.service_url("disbursement")
        path = f"/cycles/{program}/{period}" + ("/preview" if dry_run else "")
        r = httpx.post(base + path, headers={"Authorization": f"Bearer {_token(token, user)}"}, timeout=None)
        if r.status_code != 200:
            # every service answers errors as kit.http.ErrorBody: {"error": ..., "details": [...]}
            detail = r.json().get("error", r.text) if r.headers.get("content-type", "").startswith("application/json") \
                else r.text
            # one line whatever the terminal's width (a JSON detail holds [brackets]: no markup)
            console.print(f"{r.status_code}: {detail}", style="red", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(1)
        body = r.json()
        t = Table(title=f"{program} {period} {'(dry run)' if dry_run else ''}")
        t.add_column("what")
        t.add_column("value", justify="right")
        for k, v in body.items():
            if not isinstance(v, (list, dict)):
                t.add_row(k, f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v))
        out.print(t)
        for k in ("per_source", "created_per_source"):
            if body.get(k):
                out.print_json(json.dumps(body[k]))

    @audit.command("verify")
    def audit_verify(public_key: Path | None = typer.Option(None, help="the regency's Ed25519 public key (PEM)"),
                     checkpoint: Path | None = typer.Option(None, help="a checkpoint saved earlier (JSON): "
                                                               "detects a rewrite of what it covers"),
                     save_checkpoint: Path | None = typer.Option(None, help="write the verified head here"),
                     as_json: bool = typer.Option(False, "--json", help="machine-readable report")) -> None:
        """Read `disbursement.>` (read-only credentials from SINERGI_NATS_*), check the chain and the
        signed checkpoints, recompute totals per source and program. Exit 1 if any check fails."""
        from services.disbursement.config import load_public_key
        pub = load_public_key(str(public_key)) if public_key else _regency_public_key()
        known = json.loads(checkpoint.read_text()) if checkpoint else None
        rep = asyncio.run(_verify(pub, known))
        if save_checkpoint and rep.ok:
            save_checkpoint.write_text(json.dumps({"head_seq": rep.head_seq, "head_hash": rep.head_hash}))
        if as_json:
            out.print_json(json.dumps({"ok": rep.ok, "events": rep.events, "head_seq": rep.head_seq,
                                       "head_hash": rep.head_hash, "checkpoints": rep.checkpoints,
                                       "signed": rep.signed, "failures": rep.failures, "notes": rep.notes,
                                       "totals": rep.totals, "changes": rep.changes}))
        else:
            t = Table(title="Totals per source and program, recomputed from the stream")
            for c in ("source", "program", "year", "ceiling", "net reserved", "paid", "KUBE grants"):
                t.add_column(c, justify="right" if c not in ("source", "program") else "left")
            for a in rep.totals.get("allocations", []):
                t.add_row(a["source"], a["programme_identifier"], str(a["fiscal_year"]), f"{a['ceiling']:,}",
                          f"{a['net_reserved']:,}", f"{a['paid']:,}", f"{a['kube_granted']:,}")
            out.print(t)
            ch = Table(title="Rule, ceiling and approval changes (who, why), from the stream")
            for c in ("#", "event", "by", "what", "reason"):
                ch.add_column(c)
            for c in rep.changes:
                ch.add_row(str(c["chain_seq"]), c["event_type"].removeprefix("disbursement."), _actor(c),
                           _what(c), str(c.get("reason") or ""))
            out.print(ch)
            out.print(f"{rep.events} events ({rep.signed} signatures verified), chain head {rep.head_seq} "
                      f"{rep.head_hash[:16]}..., {rep.checkpoints} signed checkpoints")
            for n in rep.notes:
                out.print(f"[yellow]note: {n}")
            for f in rep.failures:
                out.print(f"[red]FAIL {f}")
            out.print("[green]OK: chain intact, checkpoints valid, totals consistent" if rep.ok
                      else f"[red]{len(rep.failures)} check(s) failed")
        if not rep.ok:
            raise typer.Exit(1)

    @audit.command("public-key")
    def audit_public_key() -> None:
        """Print the regency's checkpoint public key (PEM) to hand to auditors."""
        from services.disbursement.config import DisbursementSettings, public_pem
        from services.kit import local
        keys = local.disbursement_keys()  # the data dir's key beside `sinergi up`, else the environment's
        out.print(public_pem(DisbursementSettings(**keys).signing_key).decode(), end="")


def _regency_public_key() -> Ed25519PublicKey | None:
    """On the regency's server, without --public-key: the data dir's (or configured) key, if
    one exists; never a new one."""
    from services.disbursement.config import DisbursementSettings
    try:
        from services.kit import local  # `sinergi up`'s data dir (issue 13)
        keys = local.disbursement_keys()
    except ImportError:
        keys = {}
    cfg = DisbursementSettings(**keys)
    path = Path(cfg.signing_key_file) if cfg.signing_key_file else Path(cfg.state_dir) / "signing.pem"
    return cfg.signing_key.public_key() if path.exists() else None


def _actor(change: dict[str, Any]) -> str:
    return str(next((change[k] for k in ("set_by", "prepared_by", "approved_by", "rejected_by") if k in change), ""))


def _what(change: dict[str, Any]) -> str:
    skip = {"event_type", "chain_seq", "occurred_at", "reason", "set_by", "prepared_by", "approved_by",
            "rejected_by", "rules", "previous_rules"}
    return ", ".join(f"{k}={v}" for k, v in change.items() if k not in skip)[:120]


async def _verify(pub: Ed25519PublicKey | None, known: dict[str, Any] | None) -> Report:
    from services.disbursement import audit
    from services.kit import local

    settings = local.settings()
    names = settings.names
    nc = await local.connect(settings, "sinergi-audit")
    try:
        stream = names.stream("DISBURSEMENT")
        msgs = await audit.read_stream(nc.jetstream(), stream, names.subject("disbursement.>"))
    finally:
        await nc.close()
    return audit.verify(msgs, stream, pub, known)
