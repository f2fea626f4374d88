"""Reporting's consumers: REGISTRY, INTAKE and DISBURSEMENT events folded into the read models.

One kit consumer (services/kit/consumer.py) per stream, with the durable names of before.
`decode` turns one message into its event id and facts (adapters.py): an event type
reporting has an adapter for gives facts, another known event type is `None` (acknowledged,
skipped), anything else is a `Rejection` the kit dead-letters with its reason code. `fold`
then claims the event ids and applies the facts of the new ones, in the consumer's unit of
work, which commits before the batch is acknowledged.

Reporting keeps its own idempotency record (`inbox=False` for the kit): it claims *event
ids* in the inbox, not the kit's delivery keys (Nats-Msg-Id, else the stream sequence). The
same event published twice without a Nats-Msg-Id still counts once, existing deployments
keep their inbox, and `sinergi reporting rebuild` (which claims event ids too) gives the
very same inbox rows as the live consumers.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

from nats.aio.msg import Msg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from contracts.catalog import EVENTS
from services.kit.consumer import ConsumerSpec, Delivery
from services.kit.decode import Limits, decode_envelope
from services.kit.outbox import claim
from services.kit.uow import UnitOfWork
from services.reporting import store
from services.reporting.adapters import ADAPTERS, Pseudonym, Signatures
from services.reporting.facts import Fact

if TYPE_CHECKING:
    from services.reporting.app import Reporting
    from services.reporting.settings import ReportingSettings


class Source(NamedTuple):
    stream: str    # bare stream name
    subject: str   # bare subject filter
    durable: str   # the durable consumer (existing deployments keep their position)

    def batch(self, cfg: ReportingSettings) -> int:
        return cfg.registry_batch if self.stream == "REGISTRY" else cfg.batch


SOURCES = (
    Source("REGISTRY", "registry.events.>", "reporting-registry-v1"),
    Source("INTAKE", "intake.events.>", "reporting-intake-v1"),
    Source("DISBURSEMENT", "disbursement.>", "reporting-disbursement-v1"),
)
WANTED = {event_type: cls for event_type, (cls, _facts) in ADAPTERS.items()}
SKIPPED = frozenset(EVENTS) - WANTED.keys()  # known events that change no figure
# half of NATS's 1 MB: the largest event reporting reads, registry.enrolments_changed with
# 500 changes, is about 180 KB; the largest it skips, disbursement.payment_instructions_issued
# with 1,000 instructions, 250-350 KB (one or two funding lines each)
LIMITS = Limits(max_bytes=512 * 1024)


class Folded(NamedTuple):
    """One decoded event: its id (the idempotency key) and its facts (none for, e.g., a
    failed settlement)."""

    event_id: str
    facts: list[Fact]


def decode(data: bytes, pseudonym: Pseudonym) -> Folded | None:
    """One message's event id and facts; None for a known event reporting does not use;
    `Rejection` (kit/decode.py) for anything else."""
    env = decode_envelope(data, WANTED, LIMITS, skip=SKIPPED)
    if env is None:
        return None
    # no text check here: kit.decode refuses every lone surrogate and NUL before a contract is
    # built (rjct.text.unstorable / rjct.text.nul), so what an adapter copies is storable
    return Folded(str(env.event_id), ADAPTERS[env.event_type][1](env, pseudonym))


async def fold(session: AsyncSession | AsyncConnection, consumer: str, events: Iterable[Folded]) -> int:
    """Claim the event ids for `consumer` and apply the facts of those not seen before (each
    once, also within the batch). Returns how many events were new."""
    events = list(events)
    fresh = await claim(session, store.inbox, consumer, (e.event_id for e in events))
    new = len(fresh)
    facts: list[Fact] = []
    for e in events:
        if e.event_id in fresh:
            fresh.discard(e.event_id)
            facts.extend(e.facts)
    await store.apply(session, facts)
    return new


async def _handle(consumer: str, uow: UnitOfWork, batch: list[Delivery[Folded]]) -> None:
    await fold(uow.session, consumer, (d.value for d in batch if d.value is not None))


def _decoder(pseudonym: Pseudonym, signatures: Signatures | None = None) -> Callable[[Msg], Folded | None]:
    if signatures is None:
        return lambda msg: decode(msg.data, pseudonym)

    def signed(msg: Msg) -> Folded | None:
        signatures.check(msg.headers, msg.data)
        return decode(msg.data, pseudonym)
    return signed


def register(deps: Reporting) -> None:
    names, cfg = deps.kit.names, deps.cfg
    for src in SOURCES:
        deps.kit.consume(ConsumerSpec(
            durable=src.durable, stream=names.stream(src.stream), subject=names.subject(src.subject),
            decode=_decoder(deps.pseudonyms, deps.signatures if src.stream == "DISBURSEMENT" else None),
            handle=partial(_handle, src.durable),
            batch=src.batch(cfg), fetch_wait=cfg.fetch_wait, inbox=False))
