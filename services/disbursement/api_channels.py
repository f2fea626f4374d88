"""Disbursement HTTP routes for the payment channels' side: paying a failed instruction again,
and the reconciliation of channels' daily statements."""
from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from services.disbursement import reconcile, retries
from services.kit.auth import Principal, Role, require

if TYPE_CHECKING:
    from services.disbursement.app import Disbursement

Manager = Annotated[Principal, Depends(require(Role.program_manager))]
Reader = Annotated[Principal, Depends(require(Role.program_manager, Role.auditor))]
Channel = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,31}$", description="payment channel, e.g. bank, pos")]


class RetryIn(BaseModel):
    channel: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,31}$",
                                description="another channel; default: the failed instruction's")


class RetryOut(BaseModel):
    model_config = ConfigDict(extra="allow")  # the main fields typed, the rest kept
    instruction_id: str
    retry_of: str
    channel: str
    amount: int


class Items(BaseModel):
    items: list[dict[str, Any]]


def router(deps: Disbursement) -> APIRouter:
    r = APIRouter()

    @r.post("/instructions/{instruction_id}/retry", response_model=RetryOut, tags=["channels"],
            summary="pay a failed instruction again in its cycle (a new instruction linked to it)")
    async def retry(instruction_id: uuid.UUID, body: RetryIn, p: Manager) -> dict[str, Any]:
        return await retries.retry(deps, instruction_id, body.channel, p.user)

    @r.get("/reconciliation/{channel}", response_model=Items, tags=["channels"], summary="a channel's statements, reconciled")
    async def statements(channel: Channel, _p: Reader) -> dict[str, Any]:
        return {"items": await reconcile.statements(deps, channel)}

    @r.get("/reconciliation/{channel}/{statement_id}", response_model=Items, tags=["channels"],
           summary="the lines of a statement that do not match the books, and payments it lacks")
    async def unmatched(channel: Channel, statement_id: Annotated[str, Path(max_length=128)],
                        _p: Reader) -> dict[str, Any]:
        return {"items": await reconcile.unmatched(deps, channel, statement_id)}

    return r
