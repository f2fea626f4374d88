"""`sinergi contracts export DIR`: the contracts for agencies that do not read Python.

Writes one JSON Schema (draft 2020-12) per event, for its whole envelope, and per message on
the agency, dead-letter and lookup subjects, plus one AsyncAPI 3.0 document that names every
subject, the JetStream stream that keeps it, who sends and who receives it, and references
those schema files. Events come from `contracts.catalog.EVENTS`, so a new event class in a
domain module is exported without touching this file.

    DIR/asyncapi.yaml
    DIR/schemas/events/<event_type>.json          e.g. registry.enrolments_changed.json
    DIR/schemas/messages/<name>.json              e.g. enrolment_report.json
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from contracts.agency import EnrolmentReport, ProposalToAgency, ReceiptBatch
from contracts.catalog import EVENTS
from contracts.channel import DisburseRequest, OnDisburse, Statement
from contracts.crvs import DeathNotification, NotifyReceipt
from contracts.deadletter import DeadLetter
from contracts.envelope import Envelope, Event
from contracts.lookup import LookupReply, LookupRequest
from contracts.subjects import CRVS_DEATHS, CRVS_RECEIPTS, REGISTRY_LOOKUP, STREAMS, event_subject

ASYNCAPI_VERSION = "3.0.0"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
# AsyncAPI parsers know draft-07 by name; our schemas use only keywords draft-07 shares
# ($defs is reached by JSON pointer, which any dialect resolves).
SCHEMA_FORMAT = "application/schema+json;version=draft-07"


@dataclass(frozen=True)
class Message:
    """A non-event message: who talks on which subject, in which stream (None: core NATS)."""

    key: str             # file and component name, e.g. enrolment_report
    model: type[BaseModel]
    address: str         # AsyncAPI channel address; `{param}` for a wildcard token
    stream: str | None
    action: str          # what Sinergi does on it: "receive" or "send"
    summary: str
    parameters: tuple[tuple[str, str], ...] = ()


PROGRAM = ("program", "program code, e.g. pkh, bpnt, kamalia_merekah")
CHANNEL = ("channel", "payment channel name, e.g. bank_jateng, pos")
MESSAGES: tuple[Message, ...] = (
    Message("enrolment_report", EnrolmentReport, "agency.{program}.enrolments", "AGENCY_ENROLMENTS", "receive",
            "A program agency reports one person's enrolment. Set the Nats-Msg-Id header to "
            "<program>:<message_id> (e.g. pkh:row-1): JetStream de-duplicates it across every program's "
            "reports, so the program scopes it. Any other header is rejected (rjct.message_id.unscoped); "
            "without one the registry's receipts still answer a repeat.", (PROGRAM,)),
    Message("receipt_batch", ReceiptBatch, "agency.{program}.receipts", "AGENCY_RECEIPTS", "send",
            "The registry answers every enrolment report (succ, or rjct with every reason), the reports of one "
            "transaction together: look each up by message_id.", (PROGRAM,)),
    Message("proposal_to_agency", ProposalToAgency, "agency.{program}.proposals", "AGENCY_PROPOSALS", "send",
            "A verifier accepted a proposal (usulan) asking for this agency's program: the person's identifiers "
            "(NIK, No. KK), name, sex, birth date, village and address. Nats-Msg-Id = message_id. The agency "
            "answers with an ordinary enrolment report for the same NIK on agency.{program}.enrolments, which "
            "closes the proposal (registry.proposal_fulfilled).", (PROGRAM,)),
    Message("dead_letter", DeadLetter, "deadletter.{service}", "DEADLETTER", "send",
            "A message a service could not accept, verbatim (base64) with the reason; for operators.",
            (("service", "the service that rejected it: intake, registry, disbursement, reporting"),)),
    Message("disburse_request", DisburseRequest, "channel.{channel}.instructions", "CHANNEL", "send",
            "Disbursement tells a payment channel (bank, post office) to pay up to 500 people (G2P Connect "
            "disburse): payee name, financial address, proxy, amount, note. Nats-Msg-Id = transaction_id; "
            "pay each disbursement_id at most once.", (CHANNEL,)),
    Message("on_disburse", OnDisburse, "channel.{channel}.settlements", "CHANNEL", "receive",
            "The channel's per-item answers (succ, or rjct with a reason code), Nats-Msg-Id "
            "<channel>:<settlement_id>. A channel settles only instructions issued to it "
            "(else rjct.settlement.wrong_channel); settlement ids are unique per channel. A single Settlement "
            "(contracts.disbursement) is still accepted on the same subject.", (CHANNEL,)),
    Message("statement", Statement, "channel.{channel}.statements", "CHANNEL", "receive",
            "The channel's daily statement (the day's paid items, WIB); Sinergi reconciles it and lists what "
            "does not match.", (CHANNEL,)),
    Message("death_notification", DeathNotification, CRVS_DEATHS, "CRVS", "receive",
            "Dukcapil (the civil registry) notifies deaths in DCI's CRVS `notify` shape (up to 100 DEATH events, "
            "each with the NIK, death_date and the death certificate's registration_number). Nats-Msg-Id "
            "dukcapil:<header.message_id>. The strongest source: the person is deceased from death_date, in "
            "every program, and no program's report disputes it."),
    Message("notify_receipt", NotifyReceipt, CRVS_RECEIPTS, "CRVS_RECEIPTS", "send",
            "The registry's answer to each notify message: one status per event (succ, or rjct with a reason "
            "code); a message sent again gets the same answer."),
    Message("lookup_request", LookupRequest, REGISTRY_LOOKUP, None, "receive",
            "Core NATS request-reply (no stream): find people by NIK, No. KK, or name in a village."),
    Message("lookup_reply", LookupReply, REGISTRY_LOOKUP + ".reply", None, "send",
            "The registry's answer to a lookup, sent to the request's reply inbox."),
)


def stream_of(subject: str) -> str | None:
    """The stream whose subject filters match `subject` (a concrete or `{param}` address)."""
    tokens = [("*" if t.startswith("{") else t) for t in subject.split(".")]
    for stream, filters in STREAMS.items():
        for f in filters:
            ft = f.split(".")
            if ft[-1] == ">" and len(tokens) >= len(ft) and all(a in ("*", b) for a, b in zip(ft[:-1], tokens, strict=False)):
                return stream
            if len(ft) == len(tokens) and all(a == b or a == "*" for a, b in zip(ft, tokens, strict=True)):
                return stream
    return None


def event_schema(cls: type[Event]) -> dict[str, Any]:
    schema = Envelope[cls].model_json_schema()  # type: ignore[valid-type]
    schema["title"] = f"{cls.__name__} envelope"
    schema["description"] = (f"{cls.event_type} v{cls.schema_version} on {event_subject(cls.event_type)}: "
                             f"{(cls.__doc__ or '').strip().splitlines()[0] if cls.__doc__ else ''}").strip()
    # a consumer can dispatch on these two without reading the docs
    schema["properties"]["event_type"]["const"] = cls.event_type
    schema["properties"]["schema_version"]["const"] = cls.schema_version
    return {"$schema": DIALECT, **schema}


def message_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {"$schema": DIALECT, **model.model_json_schema()}


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")
    return path


def _channel_id(address: str) -> str:
    return address.replace("{", "").replace("}", "").replace(".", "_")


def _summary(cls: type[BaseModel]) -> str:
    return (cls.__doc__ or cls.__name__).strip().splitlines()[0]


def asyncapi_document() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    components: dict[str, Any] = {"messages": {}}

    def add_channel(address: str | None, cid: str, msg_key: str, title: str, summary: str, schema_file: str,
                    stream: str | None, params: tuple[tuple[str, str], ...] = ()) -> None:
        components["messages"][msg_key] = {
            "name": msg_key, "title": title, "summary": summary, "contentType": "application/json",
            "payload": {"schemaFormat": SCHEMA_FORMAT, "schema": {"$ref": schema_file}},
        }
        ch: dict[str, Any] = {
            "address": address,
            "description": (f"JetStream stream {stream} (file storage, de-duplication on Nats-Msg-Id)"
                            if stream else "core NATS, outside every stream"),
            "messages": {msg_key: {"$ref": f"#/components/messages/{msg_key}"}},
            "x-jetstream-stream": stream,
        }
        if params:
            ch["parameters"] = {name: {"description": desc} for name, desc in params}
        channels[cid] = ch

    for event_type, cls in sorted(EVENTS.items()):
        address = event_subject(event_type)
        cid = _channel_id(address)
        add_channel(address, cid, event_type, cls.__name__, _summary(cls), f"schemas/events/{event_type}.json",
                    stream_of(address))
        operations[f"{cls.domain}.emit.{cls.__name__}"] = {
            "action": "send", "channel": {"$ref": f"#/channels/{cid}"},
            "summary": f"the {cls.domain} service publishes {event_type} through its outbox "
                       "(Nats-Msg-Id = event_id)",
            "messages": [{"$ref": f"#/channels/{cid}/messages/{event_type}"}],
        }

    for m in MESSAGES:
        if m.key == "lookup_reply":
            continue  # the reply channel is dynamic (the requester's inbox): added with the lookup below
        cid = _channel_id(m.address)
        add_channel(m.address, cid, m.key, m.model.__name__, m.summary, f"schemas/messages/{m.key}.json",
                    m.stream, m.parameters)
        op: dict[str, Any] = {"action": m.action, "channel": {"$ref": f"#/channels/{cid}"}, "summary": m.summary,
                              "messages": [{"$ref": f"#/channels/{cid}/messages/{m.key}"}]}
        if m.key == "lookup_request":
            reply = next(x for x in MESSAGES if x.key == "lookup_reply")
            add_channel(None, "registry_lookup_reply", reply.key, reply.model.__name__, reply.summary,
                        f"schemas/messages/{reply.key}.json", None)
            op["reply"] = {"address": {"location": "$message.header#/reply_to",
                                       "description": "the requester's NATS reply inbox"},
                           "channel": {"$ref": "#/channels/registry_lookup_reply"},
                           "messages": [{"$ref": f"#/channels/registry_lookup_reply/messages/{reply.key}"}]}
        operations[f"{m.key}.{m.action}"] = op

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Sinergi event backbone",
            "version": "0.1.0",
            "description": (
                "Subjects, streams and messages of Sinergi, one auditable event backbone for a regency's "
                "poverty programs. Every JetStream publish carries a Nats-Msg-Id header (event_id for "
                "events, <program>:<message_id> for agency reports) so a repeat is dropped. Streams: "
                + ", ".join(f"{s} ({' '.join(f)})" for s, f in STREAMS.items()) + "."),
            "license": {"name": "MIT"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "production": {"host": "nats:4222", "protocol": "nats",
                           "description": "the regency's NATS with JetStream (deploy/docker-compose.yml)"},
            "development": {"host": "127.0.0.1:4222", "protocol": "nats",
                            "description": "a local NATS; `sinergi up` prints the embedded server's port"},
        },
        "channels": channels,
        "operations": operations,
        "components": components,
    }


def export(directory: Path | str) -> list[Path]:
    """Write every schema and the AsyncAPI document under `directory`; return the files written."""
    out = Path(directory)
    written = [_write(out / "schemas" / "events" / f"{t}.json", event_schema(c)) for t, c in sorted(EVENTS.items())]
    written += [_write(out / "schemas" / "messages" / f"{m.key}.json", message_schema(m.model)) for m in MESSAGES]
    doc = out / "asyncapi.yaml"
    doc.write_text(yaml.safe_dump(asyncapi_document(), sort_keys=False, allow_unicode=True, width=110),
                   encoding="utf-8")
    written.append(doc)
    return written
