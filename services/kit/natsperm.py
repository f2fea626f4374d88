"""Who may do what on NATS: one identity per service, program agency, payment channel and
auditor, and an operator identity for `sinergi migrate` and backups.

Permissions are subject allow-lists checked by nats-server. Reading a JetStream stream is
itself a set of publishes to the JetStream API ($JS.API.CONSUMER.CREATE / INFO / MSG.NEXT)
and acks ($JS.ACK), so an outside party gets those only for one fixed consumer name with its
own filter subject: the server refuses a create request whose filter differs from the subject
it was sent on, so an agency cannot make a consumer that reads another program's receipts.

Replies come back on inboxes. Every identity gets its own inbox prefix `_INBOX.<user>` (the
client must connect with that `inbox_prefix`; kit.streams does it for the services), so no
one can read another party's replies, e.g. a `registry.lookup` answer full of NIKs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from contracts.subjects import CRVS_DEATHS, CRVS_RECEIPTS, REGISTRY_LOOKUP, STREAMS

JS = "$JS.API"
SERVICES = ("intake", "registry", "disbursement", "reporting")

# What each service publishes and which streams it reads. Change here when a service starts
# consuming a new stream; the integration test then shows the matrix still holds.
SERVICE_PUBLISH: dict[str, list[str]] = {
    "intake": ["intake.events.>", REGISTRY_LOOKUP],
    "registry": ["registry.events.>", "agency.*.receipts", "agency.*.proposals", CRVS_RECEIPTS],
    "disbursement": ["disbursement.>", "channel.*.instructions", REGISTRY_LOOKUP],
    "reporting": [],
}
SERVICE_READS: dict[str, list[str]] = {
    "intake": ["REGISTRY"],
    # REGISTRY: its own enrolment changes, to close proposals forwarded to an agency
    "registry": ["AGENCY_ENROLMENTS", "INTAKE", "CRVS", "REGISTRY"],
    "disbursement": ["REGISTRY", "CHANNEL"],
    # not DEADLETTER: dead letters carry the raw message, personal data included
    "reporting": ["REGISTRY", "INTAKE", "DISBURSEMENT"],
}
SERVICE_SUBSCRIBE: dict[str, list[str]] = {
    "registry": [REGISTRY_LOOKUP],  # core request-reply, answered with allow_responses
}


@dataclass
class Identity:
    user: str
    kind: str  # service, agency, channel, auditor, ops
    publish: list[str] = field(default_factory=list)
    subscribe: list[str] = field(default_factory=list)
    subscribe_deny: list[str] = field(default_factory=list)
    allow_responses: bool = False
    description: str = ""

    @property
    def inbox_prefix(self) -> str:
        return f"_INBOX.{self.user}"

    def permissions(self) -> dict[str, Any]:
        perms: dict[str, Any] = {"publish": {"allow": self.publish}, "subscribe": {"allow": self.subscribe}}
        if self.subscribe_deny:
            perms["subscribe"]["deny"] = self.subscribe_deny
        if self.allow_responses:
            perms["allow_responses"] = {"max": 1, "expires": "1m"}
        return perms


def _one_consumer(stream: str, consumer: str, filter_subject: str) -> list[str]:
    """JetStream API subjects to create, inspect, pull from and ack ONE named, filtered consumer."""
    return [f"{JS}.CONSUMER.CREATE.{stream}.{consumer}.{filter_subject}",
            f"{JS}.CONSUMER.INFO.{stream}.{consumer}",
            f"{JS}.CONSUMER.MSG.NEXT.{stream}.{consumer}",
            f"$JS.ACK.{stream}.{consumer}.>"]


def _any_consumer(stream: str) -> list[str]:
    """A service owns its durables on `stream` (names chosen in its code)."""
    return [f"{JS}.CONSUMER.CREATE.{stream}.>", f"{JS}.CONSUMER.DURABLE.CREATE.{stream}.>",
            f"{JS}.CONSUMER.INFO.{stream}.>", f"{JS}.CONSUMER.MSG.NEXT.{stream}.>",
            f"{JS}.STREAM.MSG.GET.{stream}", f"$JS.ACK.{stream}.>"]


def service(name: str) -> Identity:
    user = f"svc-{name}"
    pub = [*SERVICE_PUBLISH[name], f"deadletter.{name}", f"{JS}.INFO",
           # ServiceRuntime.start checks every stream exists (creating them is `sinergi migrate`'s job)
           f"{JS}.STREAM.INFO.*"]
    for stream in SERVICE_READS[name]:
        pub += _any_consumer(stream)
    # the kit's pull consumers and requests use the connection's own inbox prefix (kit.bus)
    sub = [f"_INBOX.{user}.>", *SERVICE_SUBSCRIBE.get(name, [])]
    return Identity(user, "service", pub, sub, allow_responses=name == "registry",
                    description=f"the {name} service")


def agency(program: str, agency_name: str = "") -> Identity:
    user = f"agency-{program}"
    pub = [f"agency.{program}.enrolments",
           *_one_consumer("AGENCY_RECEIPTS", f"receipts-{program}", f"agency.{program}.receipts"),
           # proposals (usulan) accepted for its program, read through one named consumer (issue 17)
           *_one_consumer("AGENCY_PROPOSALS", f"proposals-{program}", f"agency.{program}.proposals")]
    sub = [f"_INBOX.{user}.>", f"agency.{program}.receipts", f"agency.{program}.proposals"]
    return Identity(user, "agency", pub, sub, description=f"{agency_name or 'agency'} for program {program}")


CIVIL_REGISTRY = "dukcapil"


def civil_registry() -> Identity:
    """Dukcapil, the civil registry: publishes death notifications (DCI CRVS `notify`) on its
    one subject and reads the registry's answers through one named consumer; nothing else."""
    user = CIVIL_REGISTRY
    pub = [CRVS_DEATHS, *_one_consumer("CRVS_RECEIPTS", f"receipts-{user}", CRVS_RECEIPTS)]
    sub = [f"_INBOX.{user}.>", CRVS_RECEIPTS]
    return Identity(user, "civil_registry", pub, sub, description="Dukcapil, the civil registry (death notifications)")


def channel(name: str) -> Identity:
    user = f"channel-{name}"
    pub = [f"channel.{name}.settlements", f"channel.{name}.statements",
           *_one_consumer("CHANNEL", f"instructions-{name}", f"channel.{name}.instructions")]
    sub = [f"_INBOX.{user}.>", f"channel.{name}.instructions"]
    return Identity(user, "channel", pub, sub, description=f"payment channel {name}")


def auditor(name: str) -> Identity:
    """Read-only: durable consumers named `audit-<name>` on DISBURSEMENT (any filter inside it),
    ephemeral ones, and single-message reads. The fixed durable name keeps it from pulling or
    acking a service's messages."""
    user = f"auditor-{name}"
    consumer = f"audit-{name}"
    pub = [f"{JS}.INFO", f"{JS}.STREAM.INFO.DISBURSEMENT", f"{JS}.STREAM.MSG.GET.DISBURSEMENT",
           f"{JS}.CONSUMER.CREATE.DISBURSEMENT.{consumer}", f"{JS}.CONSUMER.CREATE.DISBURSEMENT.{consumer}.>",
           # ephemeral ordered consumers (`sinergi audit verify`): no name, flow control, no acks
           f"{JS}.CONSUMER.CREATE.DISBURSEMENT", "$JS.FC.DISBURSEMENT.>",
           f"{JS}.CONSUMER.INFO.DISBURSEMENT.{consumer}", f"{JS}.CONSUMER.MSG.NEXT.DISBURSEMENT.{consumer}",
           f"{JS}.CONSUMER.DELETE.DISBURSEMENT.{consumer}", f"$JS.ACK.DISBURSEMENT.{consumer}.>"]
    return Identity(user, "auditor", pub, [f"_INBOX.{user}.>"], description=f"read-only auditor {name}")


def ops() -> Identity:
    """`sinergi migrate` (create and update streams) and backups (snapshot, restore). No data
    subjects, and no stream deletes or purges at all: removing a stream is a deliberate
    configuration change, never a routine credential's power."""
    pub = [f"{JS}.INFO", f"{JS}.STREAM.NAMES", f"{JS}.STREAM.LIST", f"{JS}.CONSUMER.LIST.*", f"{JS}.CONSUMER.NAMES.*",
           f"{JS}.CONSUMER.INFO.*.*"]
    for stream in STREAMS:
        pub += [f"{JS}.STREAM.{op}.{stream}" for op in ("CREATE", "UPDATE", "INFO", "SNAPSHOT", "RESTORE")]
    pub += ["$JS.SNAPSHOT.>"]  # snapshot chunk acks and restore uploads
    # the dead-letter queue (`sinergi deadletter list/show/discard`, kit.ops): read letters one
    # by one or through an ephemeral ordered consumer, delete one; never the data streams
    pub += [f"{JS}.STREAM.MSG.GET.DEADLETTER", f"{JS}.STREAM.MSG.DELETE.DEADLETTER", f"{JS}.CONSUMER.CREATE.DEADLETTER",
            f"{JS}.CONSUMER.CREATE.DEADLETTER.>", "$JS.FC.DEADLETTER.>"]
    return Identity("ops", "ops", pub, ["_INBOX.ops.>"],
                    description="operator: migrations, backups, status and the dead-letter queue")


def identities(programs: dict[str, str], channels: list[str], auditors: list[str]) -> list[Identity]:
    ids = ([service(s) for s in SERVICES] + [agency(p, a) for p, a in programs.items()] + [civil_registry()]
           + [channel(c) for c in channels] + [auditor(a) for a in auditors] + [ops()])
    # nats-server accepts a subscription to `_INBOX.>` from anyone allowed `_INBOX.*` (the
    # wildcard token matches `*`), but enforces a deny at delivery: so a service never receives
    # what is addressed to another identity's inboxes.
    for ident in ids:
        if ident.kind == "service":
            ident.subscribe_deny = [f"{o.inbox_prefix}.>" for o in ids if o is not ident]
    return ids
