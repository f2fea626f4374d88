"""Subject and stream names.

Production uses the bare names below. A `Names` with a prefix gives every test run its own
subjects and streams on a shared server (streams may not overlap in subjects, so a prefix on
the stream name alone is not enough).

Request-reply subjects (`registry.lookup`) live outside every stream's subjects: a stream
that captured them would answer the request with its own PubAck.
"""
from __future__ import annotations

from dataclasses import dataclass

# stream name -> subject filters (unprefixed)
STREAMS: dict[str, list[str]] = {
    "REGISTRY": ["registry.events.>"],
    "INTAKE": ["intake.events.>"],
    "DISBURSEMENT": ["disbursement.>"],
    "AGENCY_ENROLMENTS": ["agency.*.enrolments"],
    "AGENCY_RECEIPTS": ["agency.*.receipts"],
    # accepted proposals (usulan) for a program an outside agency owns: each agency reads its own
    "AGENCY_PROPOSALS": ["agency.*.proposals"],
    "CHANNEL": ["channel.*.instructions", "channel.*.settlements", "channel.*.statements"],
    "DEADLETTER": ["deadletter.>"],
    # the civil registry (Dukcapil): death notifications in DCI's CRVS shape (contracts.crvs),
    # and the registry's answer to each; streams of their own, like the agencies'
    "CRVS": ["crvs.dukcapil.deaths"],
    "CRVS_RECEIPTS": ["crvs.dukcapil.receipts"],
}
# streams that several outside parties publish into, where the consuming service
# de-duplicates per party itself (the registry by program and message_id): JetStream's
# duplicate window is keyed by Nats-Msg-Id alone, across the whole stream, so one agency that
# publishes another's `<program>:<message_id>` first had the other's report dropped; here the
# window is JetStream's minimum (100 ms), too short to race for
PARTY_DEDUP_STREAMS = {"AGENCY_ENROLMENTS"}
MIN_DEDUP_WINDOW_SECONDS = 0.1
# the auditors' stream: money must not be deleted or purged (issue 7)
SEALED_STREAMS = {"DISBURSEMENT"}
# operators' queue of messages a service could not accept; limited in age (personal data)
DEADLETTER_STREAM = "DEADLETTER"

REGISTRY_LOOKUP = "registry.lookup"
CRVS_DEATHS = "crvs.dukcapil.deaths"
CRVS_RECEIPTS = "crvs.dukcapil.receipts"


def event_subject(event_type: str) -> str:
    """`registry.enrolments_changed` -> `registry.events.enrolments_changed`;
    disbursement events keep `disbursement.<name>` (auditors subscribe to `disbursement.>`)."""
    domain, _, name = event_type.partition(".")
    return f"disbursement.{name}" if domain == "disbursement" else f"{domain}.events.{name}"


@dataclass(frozen=True)
class Names:
    prefix: str = ""  # e.g. "t8f2c1" in tests; empty in production

    def subject(self, bare: str) -> str:
        return f"{self.prefix}.{bare}" if self.prefix else bare

    def bare(self, subject: str) -> str:
        p = f"{self.prefix}." if self.prefix else ""
        return subject[len(p):] if p and subject.startswith(p) else subject

    def stream(self, bare: str) -> str:
        return f"{self.prefix.upper()}_{bare}" if self.prefix else bare

    def event(self, event_type: str) -> str:
        return self.subject(event_subject(event_type))

    def enrolments(self, program: str = "*") -> str:
        return self.subject(f"agency.{program}.enrolments")

    def receipts(self, program: str = "*") -> str:
        return self.subject(f"agency.{program}.receipts")

    def agency_proposals(self, program: str = "*") -> str:
        return self.subject(f"agency.{program}.proposals")

    def deadletter(self, service: str) -> str:
        return self.subject(f"deadletter.{service}")

    def crvs_deaths(self) -> str:
        return self.subject(CRVS_DEATHS)

    def crvs_receipts(self) -> str:
        return self.subject(CRVS_RECEIPTS)

    def lookup(self) -> str:
        return self.subject(REGISTRY_LOOKUP)

    def streams(self) -> dict[str, list[str]]:
        return {self.stream(n): [self.subject(s) for s in subs] for n, subs in STREAMS.items()}
