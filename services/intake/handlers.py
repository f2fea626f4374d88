"""Intake follows the registry: proposal decisions (for the cases that proposed someone) and
enrolments in programs with home visits (the companions' caseload). One kit pull consumer on
REGISTRY; the kit decodes, de-duplicates through its inbox, dead-letters what cannot be read
and hands each batch over in one unit of work, acknowledged after the commit."""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg

from contracts.catalog import EVENTS
from contracts.envelope import Envelope, Event, utcnow
from contracts.registry import EnrolmentsChanged, ProposalDecided
from services.intake import cases, visits
from services.kit import logging as klog
from services.kit.consumer import ConsumerSpec, Delivery, envelope_key
from services.kit.decode import Limits, decode_envelope
from services.kit.uow import UnitOfWork

if TYPE_CHECKING:
    from services.intake.app import Intake

log = klog.get(__name__)

# -v2: v1 was a FastStream push (queue) consumer; a durable's type cannot change in place, so
# the pull consumer starts under a new name and reads REGISTRY once from the start. Its inbox
# keeps v1's name (both keyed by event_id), so what v1 applied counts as seen; what slips
# through is applied again harmlessly (a decision the case already shows is skipped, an
# enrolment no newer than the stored one changes nothing).
CONSUMER = "intake-registry-v2"
INBOX = "intake-registry-v1"
WANTED: dict[str, type[Event]] = {ProposalDecided.event_type: ProposalDecided,
                                  EnrolmentsChanged.event_type: EnrolmentsChanged}
# the registry's other events are not intake's business: acknowledged, not handled. An
# event_type nobody knows is a rejection (a dead letter), not a skip.
OTHER_REGISTRY_EVENTS = frozenset(t for t, cls in EVENTS.items() if cls.domain == "registry" and t not in WANTED)
# The largest event the registry sends here is an EnrolmentsChanged of MAX_ITEMS (500)
# changes of at most about 550 bytes each (every text field bounded by its contract): about
# 280 KB. Twice that is room enough; anything larger is not a registry event, and the kit's
# default (NATS's 1 MiB) would let ~900 KB of text in one unbounded field (a decision's
# `reason`) through into a case step.
LIMITS = Limits(max_bytes=512 * 1024)

def decode(msg: Msg) -> Envelope[Any] | None:
    return decode_envelope(msg.data, WANTED, LIMITS, skip=OTHER_REGISTRY_EVENTS)


async def follow_registry(deps: Intake, uow: UnitOfWork, batch: list[Delivery[Envelope[Any]]]) -> None:
    """One batch of fresh registry events, in the consumer's unit of work. No exception is
    caught here: the kit retries a database error and isolates a message that breaks this."""
    envelopes = [d.value for d in batch if d.value is not None]
    decided = [e for e in envelopes if isinstance(e.data, ProposalDecided)]
    changes = [c for e in envelopes if isinstance(e.data, EnrolmentsChanged) for c in e.data.changes]
    now = utcnow()
    await cases.apply_decisions(uow, decided, now)
    await visits.apply_enrolments(deps.cfg, uow, changes, now)
    log.info("intake.followed_registry", events=len(envelopes), decisions=len(decided), enrolments=len(changes))


def register(deps: Intake) -> None:
    kit, names = deps.kit, deps.kit.names
    kit.consume(ConsumerSpec(
        durable=CONSUMER, stream=names.stream("REGISTRY"), subject=names.subject("registry.events.>"),
        decode=decode, handle=functools.partial(follow_registry, deps), key=envelope_key, inbox_name=INBOX,
        # 100 events are up to 50,000 enrolment changes: a burst of that size was decoded and
        # applied in about 4 s (2.4 s of it decoding) on the shared 2-core machine at load 7-8,
        # far inside the kit's 60 s ack_wait
        batch=100))

    async def escalate() -> None:
        await cases.escalate_overdue(kit, deps.cfg)
    # one copy escalates (the lease holder, kit.lease); two at once would still move each case
    # once (its rows are claimed SKIP LOCKED), but every copy would scan every interval
    kit.timer("intake-escalation", deps.cfg.escalation_interval_seconds, escalate, singleton=True)
