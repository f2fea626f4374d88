"""Each service's own audit trail (jejak audit): who changed what, when, from where.

A service adds the table to its metadata and records a row in the SAME transaction as the
write it describes, so a write without its audit row cannot commit:

    # store.py
    from services.kit.audit import audit_table
    audit_log = audit_table(metadata)

    # api.py, inside `async with rt.sessions.begin() as s:`
    await audit.record(s, store.audit_log, p, "case.register", target=str(case_id),
                       area=body.village_code, detail={"category": body.category}, request=request)

Rows hold ids and codes, never personal data: `detail` goes through the same masking as the
logs (NIK/KK cut to their region part, names and texts dropped). The table is append-only by
convention; `sinergi` never updates or deletes it (retention: docs/SECURITY.md).
"""
from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.kit.auth import Principal
from services.kit.logging import mask_value


def audit_table(metadata: sa.MetaData, name: str = "audit_log") -> sa.Table:
    return sa.Table(
        name, metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("actor", sa.Text, nullable=False),          # staff username, or `system:<component>`
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("actor_area", sa.Text, nullable=False, server_default=""),
        sa.Column("action", sa.Text, nullable=False),         # e.g. case.register, cycle.run
        sa.Column("target", sa.Text),                         # the id of what changed
        sa.Column("area", sa.Text),                           # region code of what changed
        sa.Column("detail", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("client", sa.Text),                         # IP address of the request
        sa.Index(f"{name}_actor_at", "actor", "at"),
        sa.Index(f"{name}_target", "target"),
    )


def row(p: Principal | None, action: str, *, target: str | None = None, area: str | None = None,
        detail: dict[str, Any] | None = None, client: str | None = None, system: str | None = None) -> dict[str, Any]:
    if p is None and not system:
        raise ValueError("an audit row needs the acting user (or system=<component> for automatic actions)")
    return {"actor": p.user if p else f"system:{system}", "role": p.role.value if p else "system",
            "actor_area": p.area if p else "", "action": action, "target": target, "area": area,
            "detail": mask_value(detail or {}), "client": client}


async def record(session: AsyncSession | AsyncConnection, table: sa.Table, p: Principal | None, action: str, *,
                 target: str | None = None, area: str | None = None, detail: dict[str, Any] | None = None,
                 request: Any = None, system: str | None = None) -> None:
    """Insert one audit row in the caller's transaction."""
    client = request.client.host if request is not None and getattr(request, "client", None) else None
    await session.execute(sa.insert(table), [row(p, action, target=target, area=area, detail=detail,
                                                 client=client, system=system)])


async def trail(session: AsyncSession | AsyncConnection, table: sa.Table, *, actor: str | None = None,
                target: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
    """Rows, newest first, for an auditor or a data-subject request (docs/SECURITY.md)."""
    q = sa.select(table).order_by(table.c.id.desc()).limit(limit)
    if actor:
        q = q.where(table.c.actor == actor)
    if target:
        q = q.where(table.c.target == target)
    return [dict(r._mapping) for r in (await session.execute(q)).all()]


# --- staff writes over HTTP, recorded by the unit of work ----------------------------------
# Registry and disbursement write through use cases that open their own unit of work; instead
# of threading the principal and request through every one of them (22 routes, several
# modules), `install` marks each write request, kit.auth keeps the caller on request.state,
# and Kit.unit_of_work calls `record_request` before it commits: the row lands in the
# transaction of the request's first write, so a write without its row cannot commit.

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class _Pending:
    table: sa.Table
    scope: dict[str, Any]
    recorded: bool = False


_request: ContextVar[_Pending | None] = ContextVar("sinergi_audit_request", default=None)


class _AuditWrites:
    """ASGI middleware: marks a write request for the audit trail (pure ASGI, so the mark is
    seen by the route and every task it starts)."""

    def __init__(self, app: Any, table: sa.Table) -> None:
        self.app, self.table = app, table

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        token = _request.set(_Pending(self.table, scope))
        try:
            await self.app(scope, receive, send)
        finally:
            _request.reset(token)


def install(app: Any, table: sa.Table) -> None:
    """Every staff write over HTTP of this app leaves one row in `table` (call in create_app)."""
    app.add_middleware(_AuditWrites, table=table)


def request_action(scope: dict[str, Any]) -> str:
    route = scope.get("route")
    return f"{scope['method']} {getattr(route, 'path', None) or scope['path']}"


async def record_request(session: AsyncSession | AsyncConnection) -> None:
    """Called by Kit.unit_of_work before it commits: the row of the staff write under way, once
    per request; nothing outside a marked request or without a logged-in caller."""
    pending = _request.get()
    if pending is None or pending.recorded:
        return
    p = (pending.scope.get("state") or {}).get("principal")
    if not isinstance(p, Principal):
        return  # no staff caller (e.g. POST /auth/token): nothing a person changed
    params = {k: str(v) for k, v in (pending.scope.get("path_params") or {}).items()}
    client = pending.scope.get("client")
    await session.execute(sa.insert(pending.table), [row(
        p, request_action(pending.scope), target=next(reversed(params.values()), None) if params else None,
        area=params.get("regency") or params.get("village_code"), detail=params,
        client=client[0] if client else None)])
    pending.recorded = True
