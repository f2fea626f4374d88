"""Events in, facts out: the one place that knows the other services' event shapes.

`ADAPTERS` maps an `event_type` to (its contract class, a function of the decoded envelope
and reporting's pseudonym key giving facts). Other known event types are acknowledged and
skipped (handlers.py). Dates that an event does not carry are the day it happened
(`occurred_at`) in the regency's time zone.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from contracts.disbursement import (AllocationSet, KubeGrantMade, KubeGroupRegistered, KubeInstalmentPaid,
                                    KubeLoanIssued, SettlementRecorded, SettlementStatus)
from contracts.envelope import Envelope, Event
from contracts.intake import (CaseEscalated, CaseReferred, CaseRegistered, CaseResolved, CompanionAssigned,
                              VisitReportFiled)
from contracts.registry import EnrolmentsChanged, LifeStatusChanged
from services.kit.decode import Rejection
from services.reporting import domain
from services.reporting.facts import (AllocationFact, Assignment, ComplaintReceived, ComplaintReferred,
                                      ComplaintResolved, EnrolmentFact, Fact, KubeFlow, KubeGroup, LifeFact,
                                      PaymentFact, VisitDone)


class Pseudonyms:
    """Reporting's keyed pseudonym of a NIK: HMAC-SHA256 under a key derived from the
    deployment's secret, 32 hex characters. Joins a person's events without keeping who they
    are; a new secret gives new pseudonyms, so changing it needs `sinergi reporting rebuild`."""

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(f"sinergi-reporting-pseudonym|{secret}".encode()).digest()

    def __call__(self, nik: str) -> str:
        return hmac.new(self._key, nik.encode(), hashlib.sha256).hexdigest()[:32]


Pseudonym = Callable[[str], str]


class Signatures:
    """Disbursement signs every audit event: header `Sinergi-Signature: ed25519:<key_id>:<base64>`
    over `sinergi-event|<stream>|` + the message's exact bytes (docs/DISBURSEMENT.md). An event
    without a valid signature by the regency's key is rejected before it becomes facts."""

    HEADER = "Sinergi-Signature"

    def __init__(self, public_pem: bytes, stream: str) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key
        key = load_pem_public_key(public_pem)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the disbursement public key is not an Ed25519 key")
        self._key, self._prefix = key, b"sinergi-event|" + stream.encode() + b"|"
        self.key_id = hashlib.sha256(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]

    def check(self, headers: dict[str, str] | None, data: bytes) -> None:
        from cryptography.exceptions import InvalidSignature
        alg, _, rest = ((headers or {}).get(self.HEADER) or "").partition(":")
        kid, _, sig = rest.partition(":")
        if alg != "ed25519" or kid != self.key_id:
            raise Rejection("rjct.signature.invalid", "not signed by the regency's disbursement key")
        try:
            self._key.verify(base64.b64decode(sig), self._prefix + data)
        except (InvalidSignature, ValueError):
            raise Rejection("rjct.signature.invalid", "the signature does not verify: forged or altered") from None


def _day(env: Envelope) -> dt.date:
    return domain.local_date(env.occurred_at)


def _enrolments(env: Envelope[EnrolmentsChanged], pseudonym: Pseudonym) -> list[Fact]:
    return [EnrolmentFact(e.programme_identifier, pseudonym(e.nik), e.village_code, e.enrolment_status.value,
                          e.status_change_date) for e in env.data.changes]


def _life(env: Envelope[LifeStatusChanged], pseudonym: Pseudonym) -> list[Fact]:
    """The registry's one announcement per change, whichever program or source reported it."""
    return [LifeFact(pseudonym(c.nik), c.village_code, c.life_status.value, c.effective_date)
            for c in env.data.changes]


def _settlement(env: Envelope[SettlementRecorded], _p: Pseudonym) -> list[Fact]:
    """A paid settlement: one payment per funding line (a payment may draw on several sources).
    Events from before the settlement carried its village count under an unknown area ("")."""
    e = env.data
    if e.status != SettlementStatus.paid:
        return []
    village = getattr(e, "village_code", None) or ""
    return [PaymentFact(e.programme_identifier, e.pseudonym, village, line.source.value, line.amount, e.period,
                        payments=int(i == 0)) for i, line in enumerate(e.funding)]


def _allocation(env: Envelope[AllocationSet], _p: Pseudonym) -> list[Fact]:
    """The ceiling is absolute: its change since the previous ceiling is what is added."""
    e = env.data
    return [AllocationFact(e.source.value, e.programme_identifier, e.fiscal_year,
                           e.ceiling - (e.previous_ceiling or 0))]


def _case_registered(env: Envelope[CaseRegistered], _p: Pseudonym) -> list[Fact]:
    e = env.data
    return [ComplaintReceived(str(e.case_id), e.village_code, _day(env), domain.local_date(e.due_at), e.level.value)]


def _case_referred(env: Envelope[CaseReferred] | Envelope[CaseEscalated], _p: Pseudonym) -> list[Fact]:
    e = env.data
    return [ComplaintReferred(str(e.case_id), e.village_code, e.level.value, _day(env), domain.local_date(e.due_at))]


def _case_resolved(env: Envelope[CaseResolved], _p: Pseudonym) -> list[Fact]:
    e = env.data
    return [ComplaintResolved(str(e.case_id), e.village_code, _day(env), None)]


def _assigned(env: Envelope[CompanionAssigned], _p: Pseudonym) -> list[Fact]:
    e = env.data  # the NIK stays here: only the assignment id goes on
    return [Assignment(str(e.assignment_id), e.companion, e.village_code, e.active, domain.period_of(_day(env)))]


def _visit(env: Envelope[VisitReportFiled], _p: Pseudonym) -> list[Fact]:
    e = env.data
    return [VisitDone(str(e.visit_id), e.companion, e.village_code, e.period, e.physical_condition.value,
                      e.social_condition.value)]


def _kube_group(env: Envelope[KubeGroupRegistered], _p: Pseudonym) -> list[Fact]:
    e = env.data
    return [KubeGroup(str(e.group_id), e.village_code.replace(".", ""), len(e.members), domain.period_of(_day(env)))]


def _kube_grant(env: Envelope[KubeGrantMade], _p: Pseudonym) -> list[Fact]:
    return [KubeFlow(str(env.data.group_id), domain.period_of(_day(env)), funded=env.data.funding.amount)]


def _kube_loan(env: Envelope[KubeLoanIssued], _p: Pseudonym) -> list[Fact]:
    """The principal goes out now; instalments fall due monthly from `first_due` until it is repaid."""
    e = env.data
    out: list[Fact] = [KubeFlow(str(e.group_id), domain.period_of(_day(env)), disbursed=e.principal)]
    for period, amount in domain.instalment_schedule(e.principal, e.instalment, e.term_months, e.first_due):
        out.append(KubeFlow(str(e.group_id), period, due=amount))
    return out


def _kube_paid(env: Envelope[KubeInstalmentPaid], _p: Pseudonym) -> list[Fact]:
    return [KubeFlow(str(env.data.group_id), domain.period_of(env.data.paid_on), repaid=env.data.amount)]


Adapter = Callable[[Any, Pseudonym], list[Fact]]
ADAPTERS: dict[str, tuple[type[Event], Adapter]] = {
    cls.event_type: (cls, fn) for cls, fn in (
        (EnrolmentsChanged, _enrolments),
        (LifeStatusChanged, _life),
        (SettlementRecorded, _settlement),
        (AllocationSet, _allocation),
        (CaseRegistered, _case_registered),
        (CaseReferred, _case_referred),
        (CaseEscalated, _case_referred),
        (CaseResolved, _case_resolved),
        (CompanionAssigned, _assigned),
        (VisitReportFiled, _visit),
        (KubeGroupRegistered, _kube_group),
        (KubeGrantMade, _kube_grant),
        (KubeLoanIssued, _kube_loan),
        (KubeInstalmentPaid, _kube_paid),
    )
}
