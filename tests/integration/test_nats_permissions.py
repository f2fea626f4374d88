"""The NATS permission matrix, proven against a real nats-server running the configuration
`sinergi deploy init` generates: every identity x every subject it might try, and the
services, agencies, channels and auditor doing their real work under their own identity.

The expected allowances below are written out by hand (not read from kit.natsperm), so a
change in the generator that widens anyone's rights fails here."""
from __future__ import annotations

import contextlib
import json
import tempfile
import uuid
from pathlib import Path

import nats
import pytest

from services.kit.settings import Settings
from services.kit.streams import connect, ensure_streams
from tests import factories
from tests.conftest import eventually, running
from tests.integration.natsdeploy import Deployed, Party

pytestmark = pytest.mark.integration

STREAMS = ["REGISTRY", "INTAKE", "DISBURSEMENT", "AGENCY_ENROLMENTS", "AGENCY_RECEIPTS", "AGENCY_PROPOSALS", "CHANNEL",
           "DEADLETTER", "CRVS", "CRVS_RECEIPTS"]
API = "$JS.API"
ACK = ".1.1.1.1.1.1"  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>

DATA = ["agency.pkh.enrolments", "agency.kamalia.enrolments", "agency.pkh.receipts", "agency.kamalia.receipts",
        "agency.pkh.proposals", "agency.kamalia.proposals",
        "registry.events.people_registered", "intake.events.case_registered", "disbursement.cycle_completed",
        "channel.bri.instructions", "channel.bri.settlements", "channel.pos.instructions", "channel.pos.settlements",
        "channel.bri.statements", "channel.pos.statements", "deadletter.registry", "deadletter.intake", "deadletter.disbursement", "deadletter.reporting",
        "crvs.dukcapil.deaths", "crvs.dukcapil.receipts",
        "registry.lookup", "_INBOX.agency-kamalia.fake-reply", "_INBOX.svc-intake.fake-reply", "$SYS.REQ.SERVER.PING"]
JSAPI = [
    *[f"{API}.STREAM.{op}.{s}" for op in ("DELETE", "PURGE", "CREATE", "UPDATE") for s in STREAMS],
    f"{API}.INFO", f"{API}.STREAM.NAMES", f"{API}.STREAM.INFO.REGISTRY", f"{API}.STREAM.INFO.DISBURSEMENT",
    f"{API}.STREAM.MSG.GET.REGISTRY", f"{API}.STREAM.MSG.GET.DISBURSEMENT", f"{API}.STREAM.MSG.DELETE.DISBURSEMENT",
    f"{API}.STREAM.SNAPSHOT.DISBURSEMENT", f"{API}.STREAM.RESTORE.DISBURSEMENT", f"{API}.SERVER.REMOVE",
    f"{API}.ACCOUNT.PURGE.SINERGI",
    f"{API}.CONSUMER.CREATE.AGENCY_RECEIPTS.receipts-pkh.agency.pkh.receipts",
    f"{API}.CONSUMER.CREATE.AGENCY_RECEIPTS.receipts-kamalia.agency.kamalia.receipts",
    f"{API}.CONSUMER.CREATE.AGENCY_RECEIPTS.receipts-pkh.agency.kamalia.receipts",
    f"{API}.CONSUMER.CREATE.AGENCY_RECEIPTS", f"{API}.CONSUMER.DURABLE.CREATE.AGENCY_RECEIPTS.receipts-pkh",
    f"{API}.CONSUMER.INFO.AGENCY_RECEIPTS.receipts-pkh",
    f"{API}.CONSUMER.MSG.NEXT.AGENCY_RECEIPTS.receipts-pkh", f"{API}.CONSUMER.MSG.NEXT.AGENCY_RECEIPTS.receipts-kamalia",
    f"{API}.CONSUMER.CREATE.AGENCY_ENROLMENTS.registry-enrolments-v1.agency.pkh.enrolments",
    f"{API}.CONSUMER.CREATE.CRVS.registry-crvs-v1.crvs.dukcapil.deaths",
    f"{API}.CONSUMER.CREATE.CRVS_RECEIPTS.receipts-dukcapil.crvs.dukcapil.receipts",
    f"{API}.CONSUMER.CREATE.CRVS_RECEIPTS.receipts-pkh.crvs.dukcapil.receipts",
    f"{API}.CONSUMER.INFO.CRVS_RECEIPTS.receipts-dukcapil", f"{API}.CONSUMER.MSG.NEXT.CRVS_RECEIPTS.receipts-dukcapil",
    "$JS.ACK.CRVS_RECEIPTS.receipts-dukcapil" + ACK,
    f"{API}.CONSUMER.CREATE.AGENCY_PROPOSALS.proposals-pkh.agency.pkh.proposals",
    f"{API}.CONSUMER.CREATE.AGENCY_PROPOSALS.proposals-kamalia.agency.kamalia.proposals",
    f"{API}.CONSUMER.CREATE.AGENCY_PROPOSALS.proposals-kamalia.agency.pkh.proposals",
    f"{API}.CONSUMER.CREATE.AGENCY_PROPOSALS.proposals-pkh.agency.kamalia.proposals",
    f"{API}.CONSUMER.MSG.NEXT.AGENCY_PROPOSALS.proposals-pkh", f"{API}.CONSUMER.MSG.NEXT.AGENCY_PROPOSALS.proposals-kamalia",
    "$JS.ACK.AGENCY_PROPOSALS.proposals-pkh" + ACK,
    f"{API}.CONSUMER.CREATE.REGISTRY.registry-proposal-fulfilment-v1.registry.events.enrolments_changed",
    f"{API}.CONSUMER.CREATE.CHANNEL.instructions-bri.channel.bri.instructions",
    f"{API}.CONSUMER.CREATE.CHANNEL.instructions-pos.channel.pos.instructions",
    f"{API}.CONSUMER.CREATE.CHANNEL.instructions-pos.channel.bri.instructions",
    f"{API}.CONSUMER.MSG.NEXT.CHANNEL.instructions-bri", f"{API}.CONSUMER.MSG.NEXT.CHANNEL.instructions-pos",
    f"{API}.CONSUMER.CREATE.REGISTRY.audit-inspektorat.registry.events.people_registered",
    f"{API}.CONSUMER.CREATE.DISBURSEMENT.audit-inspektorat.disbursement.cycle_completed",
    f"{API}.CONSUMER.CREATE.DISBURSEMENT.reporting-disbursement-v1.disbursement.cycle_completed",
    f"{API}.CONSUMER.CREATE.DISBURSEMENT",
    f"{API}.CONSUMER.MSG.NEXT.DISBURSEMENT.audit-inspektorat",
    f"{API}.CONSUMER.MSG.NEXT.DISBURSEMENT.reporting-disbursement-v1",
    f"{API}.CONSUMER.DELETE.DISBURSEMENT.reporting-disbursement-v1",
    "$JS.ACK.DISBURSEMENT.reporting-disbursement-v1" + ACK, "$JS.ACK.DISBURSEMENT.audit-inspektorat" + ACK,
    "$JS.ACK.AGENCY_RECEIPTS.receipts-pkh" + ACK, "$JS.ACK.AGENCY_RECEIPTS.receipts-kamalia" + ACK,
    "$JS.FC.REGISTRY.x.1", "$JS.FC.DISBURSEMENT.x.1", "$JS.FC.CHANNEL.x.1",
]
PUBLISH = DATA + JSAPI

_INFO = {f"{API}.INFO", f"{API}.STREAM.INFO.REGISTRY", f"{API}.STREAM.INFO.DISBURSEMENT"}


def _reads(stream: str) -> set[str]:
    """Probe subjects a service that reads `stream` may use (its own durables, any name)."""
    return {s for s in JSAPI if (s.startswith((f"{API}.CONSUMER.CREATE.{stream}.", f"{API}.CONSUMER.DURABLE.CREATE.{stream}.",
                                               f"{API}.CONSUMER.INFO.{stream}.", f"{API}.CONSUMER.MSG.NEXT.{stream}.",
                                               f"$JS.ACK.{stream}."))
                                 or s == f"{API}.STREAM.MSG.GET.{stream}")}


def _agency(p: str) -> set[str]:
    return {f"agency.{p}.enrolments", f"{API}.CONSUMER.CREATE.AGENCY_RECEIPTS.receipts-{p}.agency.{p}.receipts",
            f"{API}.CONSUMER.MSG.NEXT.AGENCY_RECEIPTS.receipts-{p}", f"$JS.ACK.AGENCY_RECEIPTS.receipts-{p}" + ACK,
            # its own program's proposals only, through its one named consumer (issue 17)
            f"{API}.CONSUMER.CREATE.AGENCY_PROPOSALS.proposals-{p}.agency.{p}.proposals",
            f"{API}.CONSUMER.MSG.NEXT.AGENCY_PROPOSALS.proposals-{p}"} | (
        {f"{API}.CONSUMER.INFO.AGENCY_RECEIPTS.receipts-pkh", "$JS.ACK.AGENCY_PROPOSALS.proposals-pkh" + ACK}
        if p == "pkh" else set())


def _channel(c: str) -> set[str]:
    return {f"channel.{c}.settlements", f"channel.{c}.statements", f"{API}.CONSUMER.CREATE.CHANNEL.instructions-{c}.channel.{c}.instructions",
            f"{API}.CONSUMER.MSG.NEXT.CHANNEL.instructions-{c}"}


MAY_PUBLISH: dict[str, set[str]] = {
    "svc-intake": {"intake.events.case_registered", "registry.lookup", "deadletter.intake"} | _INFO | _reads("REGISTRY"),
    "svc-registry": {"registry.events.people_registered", "agency.pkh.receipts", "agency.kamalia.receipts",
                     "agency.pkh.proposals", "agency.kamalia.proposals",
                     "crvs.dukcapil.receipts", "deadletter.registry"} | _INFO | _reads("AGENCY_ENROLMENTS")
                    | _reads("INTAKE") | _reads("CRVS") | _reads("REGISTRY"),
    # the civil registry: its death notifications out, its receipts in through one named consumer
    "dukcapil": {"crvs.dukcapil.deaths", f"{API}.CONSUMER.CREATE.CRVS_RECEIPTS.receipts-dukcapil.crvs.dukcapil.receipts",
                 f"{API}.CONSUMER.INFO.CRVS_RECEIPTS.receipts-dukcapil",
                 f"{API}.CONSUMER.MSG.NEXT.CRVS_RECEIPTS.receipts-dukcapil",
                 "$JS.ACK.CRVS_RECEIPTS.receipts-dukcapil" + ACK},
    "svc-disbursement": {"disbursement.cycle_completed", "channel.bri.instructions", "channel.pos.instructions",
                         "registry.lookup", "deadletter.disbursement"} | _INFO | _reads("REGISTRY") | _reads("CHANNEL"),
    "svc-reporting": {"deadletter.reporting"} | _INFO | _reads("REGISTRY") | _reads("INTAKE") | _reads("DISBURSEMENT"),
    "agency-pkh": _agency("pkh"),
    "agency-kamalia": _agency("kamalia"),
    "channel-bri": _channel("bri"),
    "channel-pos": _channel("pos"),
    "auditor-inspektorat": {f"{API}.INFO", f"{API}.STREAM.INFO.DISBURSEMENT", f"{API}.STREAM.MSG.GET.DISBURSEMENT",
                            f"{API}.CONSUMER.CREATE.DISBURSEMENT.audit-inspektorat.disbursement.cycle_completed",
                            f"{API}.CONSUMER.CREATE.DISBURSEMENT",
                            f"{API}.CONSUMER.MSG.NEXT.DISBURSEMENT.audit-inspektorat",
                            "$JS.ACK.DISBURSEMENT.audit-inspektorat" + ACK, "$JS.FC.DISBURSEMENT.x.1"},
    "ops": {f"{API}.INFO", f"{API}.STREAM.NAMES", f"{API}.CONSUMER.INFO.AGENCY_RECEIPTS.receipts-pkh",
            f"{API}.CONSUMER.INFO.CRVS_RECEIPTS.receipts-dukcapil", f"{API}.STREAM.INFO.REGISTRY", f"{API}.STREAM.INFO.DISBURSEMENT",
            f"{API}.STREAM.SNAPSHOT.DISBURSEMENT", f"{API}.STREAM.RESTORE.DISBURSEMENT",
            *[f"{API}.STREAM.{op}.{s}" for op in ("CREATE", "UPDATE") for s in STREAMS]},
}

SUBSCRIBE = [">", "_INBOX.>", "_INBOX.*", "_INBOX.*.>", "_INBOX.agency-kamalia.*", "_INBOX.agency-kamalia.>", "_INBOX.svc-registry.>", "agency.*.receipts",
             "agency.pkh.receipts", "agency.kamalia.receipts", "agency.pkh.enrolments", "registry.events.>",
             "agency.*.proposals", "agency.pkh.proposals", "agency.kamalia.proposals",
             "disbursement.>", "channel.bri.instructions", "channel.pos.instructions", "channel.bri.settlements",
             "registry.lookup", "deadletter.>", "$JS.API.>", "intake.events.>", "crvs.>", "crvs.dukcapil.deaths",
             "crvs.dukcapil.receipts"]
# services read replies and pulled messages only on their own inbox prefix (kit.bus), so no
# wider inbox pattern is allowed to them
MAY_SUBSCRIBE: dict[str, set[str]] = {
    "svc-intake": set(), "svc-registry": {"_INBOX.svc-registry.>", "registry.lookup"},
    "svc-disbursement": set(), "svc-reporting": set(),
    "agency-pkh": {"agency.pkh.receipts", "agency.pkh.proposals"},
    "agency-kamalia": {"agency.kamalia.receipts", "agency.kamalia.proposals", "_INBOX.agency-kamalia.>",
                       "_INBOX.agency-kamalia.*"},
    "channel-bri": {"channel.bri.instructions"}, "channel-pos": {"channel.pos.instructions"},
    "auditor-inspektorat": set(), "ops": set(), "dukcapil": {"crvs.dukcapil.receipts"},
}


@pytest.fixture(scope="module")
async def deployed():
    d = Deployed(Path(tempfile.mkdtemp(prefix="sinergi-deploy-"))).start()
    try:
        ops = Settings(nats_url=d.url, nats_user="ops", nats_password=d.passwords["ops"], _env_file=None)
        nc = await connect(ops, "sinergi-migrate")  # what `sinergi migrate` does, as ops
        done = await ensure_streams(nc.jetstream(), ops)
        assert sorted(x.split()[1] for x in done) == sorted(STREAMS)
        await nc.close()
        yield d
    finally:
        d.stop()


async def test_every_identity_is_in_the_matrix(deployed):
    assert set(deployed.passwords) == set(MAY_PUBLISH) == set(MAY_SUBSCRIBE)


@pytest.mark.parametrize("user", sorted(MAY_PUBLISH))
async def test_publish_matrix(deployed, user):
    party = await Party(user).connect(deployed)
    try:
        allowed = await party.allowed(PUBLISH)
    finally:
        await party.close()
    assert allowed == MAY_PUBLISH[user], (f"{user}: unexpectedly allowed {sorted(allowed - MAY_PUBLISH[user])}; "
                                          f"unexpectedly refused {sorted(MAY_PUBLISH[user] - allowed)}")


@pytest.mark.parametrize("user", sorted(MAY_SUBSCRIBE))
async def test_subscribe_matrix(deployed, user):
    party = await Party(user).connect(deployed)
    try:
        assert await party.allowed([f"_INBOX.{user}.>"], "subscribe"), "own inbox"
        allowed = await party.allowed(SUBSCRIBE, "subscribe")
    finally:
        await party.close()
    expected = MAY_SUBSCRIBE[user] | ({f"_INBOX.{user}.>"} & set(SUBSCRIBE))
    assert allowed == expected, (f"{user}: unexpectedly allowed {sorted(allowed - expected)}; "
                                 f"unexpectedly refused {sorted(expected - allowed)}")


async def test_unknown_user_and_wrong_password_cannot_connect(deployed):
    for user, password in (("mallory", "whatever"), ("agency-pkh", "wrong-password"), ("ops", "")):
        with pytest.raises(Exception) as exc:
            await nats.connect(deployed.url, user=user, password=password, allow_reconnect=False,
                               max_reconnect_attempts=0, connect_timeout=3)
        assert "authorization" in str(exc.value).lower() or isinstance(exc.value, nats.errors.NoServersError)
    with pytest.raises(Exception):
        await nats.connect(deployed.url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3)


async def test_nobody_can_delete_or_purge_a_stream(deployed):
    """Beyond the matrix's refused publishes: the real JetStream calls fail and the streams stay."""
    for user in sorted(deployed.passwords):
        party = await Party(user).connect(deployed)
        js = party.nc.jetstream(timeout=0.3)
        try:
            for stream in ("DISBURSEMENT",):
                with pytest.raises(Exception):
                    await js.delete_stream(stream)
                with pytest.raises(Exception):
                    await js.purge_stream(stream)
        finally:
            await party.close()
    ops = await Party("ops").connect(deployed)
    for stream in STREAMS:
        assert (await ops.nc.jetstream().stream_info(stream)).config.name == stream
    await ops.close()


async def test_a_service_cannot_overhear_other_inboxes(deployed):
    """A reply to agency-kamalia (its PubAck) never reaches a service listening on `_INBOX.>`;
    a reply to the service itself does."""
    svc = await Party("svc-intake").connect(deployed)
    heard: list[str] = []
    # the wider patterns are refused outright now; its own prefix is allowed and hears only its own
    for pattern in ("_INBOX.>", "_INBOX.*.>", "_INBOX.agency-kamalia.>", "_INBOX.svc-intake.>"):
        async def cb(m, _p=pattern):
            heard.append(m.subject)
        with contextlib.suppress(Exception):
            await svc.nc.subscribe(pattern, cb=cb)
    kamalia = await Party("agency-kamalia").connect(deployed)
    try:
        ack = await kamalia.nc.jetstream().publish("agency.kamalia.enrolments", b"{}", headers={"Nats-Msg-Id": "x-1"})
        assert ack.stream == "AGENCY_ENROLMENTS"
        await svc.nc.jetstream().account_info()  # a reply on the service's own inbox
        await svc.nc.flush()
        assert heard and all(s.startswith("_INBOX.svc-intake.") for s in heard), heard
    finally:
        await kamalia.close()
        await svc.close()


async def _fetch(sub, n: int = 1, timeout: float = 5):
    msgs = await sub.fetch(n, timeout=timeout)
    for m in msgs:
        await m.ack()
    return msgs


async def test_auditor_reads_disbursement_and_nothing_else(deployed):
    svc = await Party("svc-disbursement").connect(deployed)
    ack = await svc.nc.jetstream().publish("disbursement.cycle_completed", b'{"cycle": "c-1"}',
                                           headers={"Nats-Msg-Id": str(uuid.uuid4())})
    assert ack.stream == "DISBURSEMENT"
    aud = await Party("auditor-inspektorat").connect(deployed)
    js = aud.nc.jetstream(timeout=0.5)
    try:
        sub = await js.pull_subscribe("disbursement.>", durable="audit-inspektorat", stream="DISBURSEMENT")
        got = await _fetch(sub)
        assert got[0].subject == "disbursement.cycle_completed"
        # an ephemeral ordered consumer, as `sinergi audit verify` reads the chain
        ordered = await js.subscribe("disbursement.>", ordered_consumer=True, stream="DISBURSEMENT")
        assert (await ordered.next_msg(timeout=5)).subject == "disbursement.cycle_completed"
        await ordered.unsubscribe()
        with pytest.raises(Exception):  # the registry is not the auditor's to read
            await js.pull_subscribe("registry.events.>", durable="audit-inspektorat", stream="REGISTRY")
        with pytest.raises(Exception):  # a durable under another name could steal a service's messages
            await js.pull_subscribe("disbursement.>", durable="reporting-disbursement-v1", stream="DISBURSEMENT")
        # an "ephemeral" create may not smuggle in a service's durable name
        req = {"stream_name": "DISBURSEMENT", "config": {"durable_name": "reporting-disbursement-v1",
                                                         "ack_policy": "explicit"}}
        r = await aud.nc.request(f"{API}.CONSUMER.CREATE.DISBURSEMENT", json.dumps(req).encode(), timeout=2)
        assert "error" in json.loads(r.data), r.data
        for subject in ("disbursement.cycle_completed", "registry.events.x", "channel.bri.settlements"):
            assert not await aud.may_publish(subject)
    finally:
        await aud.close()
        await svc.close()


async def test_channel_reads_only_its_own_instructions(deployed):
    svc = await Party("svc-disbursement").connect(deployed)
    for ch in ("bri", "pos"):
        await svc.nc.jetstream().publish(f"channel.{ch}.instructions", json.dumps({"to": ch}).encode(),
                                         headers={"Nats-Msg-Id": str(uuid.uuid4())})
    bri = await Party("channel-bri").connect(deployed)
    pos = await Party("channel-pos").connect(deployed)
    try:
        sub = await bri.nc.jetstream().pull_subscribe("channel.bri.instructions", durable="instructions-bri",
                                                      stream="CHANNEL")
        got = [json.loads(m.data) for m in await _fetch(sub, 10, timeout=1)]
        assert {"to": "bri"} in got and {"to": "pos"} not in got
        ack = await bri.nc.jetstream().publish("channel.bri.settlements", b"{}", headers={"Nats-Msg-Id": "s-1"})
        assert ack.stream == "CHANNEL"
        # pos asks for bri's instructions through its own consumer name: the server refuses the
        # filter that differs from the one in the (permitted) request subject
        req = {"stream_name": "CHANNEL", "config": {"name": "instructions-pos", "durable_name": "instructions-pos",
                                                    "filter_subject": "channel.bri.instructions",
                                                    "ack_policy": "explicit"}}
        r = await pos.nc.request(f"{API}.CONSUMER.CREATE.CHANNEL.instructions-pos.channel.pos.instructions",
                                 json.dumps(req).encode(), timeout=2)
        assert "did not match filtered subject" in json.loads(r.data)["error"]["description"]
        with pytest.raises(Exception):
            await pos.nc.jetstream(timeout=1).pull_subscribe("channel.bri.instructions", durable="instructions-pos",
                                                             stream="CHANNEL")
        assert not await pos.may_publish("channel.bri.settlements")
    finally:
        for p in (svc, bri, pos):
            await p.close()


async def test_an_agency_reads_only_its_own_programs_proposals(deployed):
    """The registry forwards accepted proposals on agency.<program>.proposals (issue 17); each
    agency reads its own program's through its one named consumer, never another's."""
    svc = await Party("svc-registry").connect(deployed)
    for program in ("pkh", "kamalia"):
        await svc.nc.jetstream().publish(f"agency.{program}.proposals", json.dumps({"to": program}).encode(),
                                         headers={"Nats-Msg-Id": str(uuid.uuid4())})
    pkh = await Party("agency-pkh").connect(deployed)
    kamalia = await Party("agency-kamalia").connect(deployed)
    try:
        sub = await pkh.nc.jetstream().pull_subscribe("agency.pkh.proposals", durable="proposals-pkh",
                                                      stream="AGENCY_PROPOSALS")
        got = [json.loads(m.data) for m in await _fetch(sub, 10, timeout=1)]
        assert {"to": "pkh"} in got and {"to": "kamalia"} not in got
        req = {"stream_name": "AGENCY_PROPOSALS",
               "config": {"name": "proposals-kamalia", "durable_name": "proposals-kamalia",
                          "filter_subject": "agency.pkh.proposals", "ack_policy": "explicit"}}
        r = await kamalia.nc.request(f"{API}.CONSUMER.CREATE.AGENCY_PROPOSALS.proposals-kamalia.agency.kamalia.proposals",
                                     json.dumps(req).encode(), timeout=2)
        assert "did not match filtered subject" in json.loads(r.data)["error"]["description"]
        assert not await kamalia.may_publish("agency.pkh.proposals")
    finally:
        for p in (svc, pkh, kamalia):
            await p.close()


async def test_services_and_agencies_work_under_their_own_identity(deployed, infra, tmp_path):
    """An agency publishes a report as agency-pkh; the registry (svc-registry) stores it and
    answers; reporting (svc-reporting) counts it; the agency reads its receipt through its own
    consumer, and the other program's agency cannot."""
    run = "t" + uuid.uuid4().hex[:10]

    def as_service(svc: str) -> Settings:
        return Settings(nats_url=deployed.url, nats_user=f"svc-{svc}", nats_password=deployed.passwords[f"svc-{svc}"],
                        database_url=infra[1], db_prefix=f"sinergi_{run}_", outbox_poll_seconds=0.02, _env_file=None)

    mark = deployed.log_mark()
    pkh = await Party("agency-pkh").connect(deployed)
    kamalia = await Party("agency-kamalia").connect(deployed)
    report = factories.enrolment("pkh", is_head_of_household=True)
    try:
        async with running("registry", as_service("registry")), running("reporting", as_service("reporting")):
            ack = await pkh.nc.jetstream().publish("agency.pkh.enrolments", json.dumps(report).encode(),
                                                   headers={"Nats-Msg-Id": factories.msg_id(report)})
            assert ack.stream == "AGENCY_ENROLMENTS"
            sub = await pkh.nc.jetstream().pull_subscribe("agency.pkh.receipts", durable="receipts-pkh",
                                                          stream="AGENCY_RECEIPTS")

            async def my_receipt():
                with contextlib.suppress(Exception):
                    for m in await _fetch(sub, 10, timeout=0.5):
                        for r in json.loads(m.data)["receipts"]:
                            if r["message_id"] == report["message_id"]:
                                return r
            receipt = await eventually(my_receipt, timeout=20)
            assert receipt["status"] == "succ"
            # reporting consumed and acked the registry's events as svc-reporting
            ops = await Party("ops").connect(deployed)
            try:
                async def reporting_acked():
                    info = await ops.nc.jetstream().consumer_info("REGISTRY", "reporting-registry-v1")
                    return info.ack_floor.stream_seq >= 1 and info.num_ack_pending == 0
                await eventually(reporting_acked, timeout=20)
            finally:
                await ops.close()
            assert deployed.violations_since(mark, "svc-") == []  # the services never hit a refusal
            with pytest.raises(Exception):
                await kamalia.nc.jetstream(timeout=1).pull_subscribe(
                    "agency.pkh.receipts", durable="receipts-kamalia", stream="AGENCY_RECEIPTS")
    finally:
        await pkh.close()
        await kamalia.close()
        from services.kit.db import drop_database
        for svc in ("registry", "reporting"):
            with contextlib.suppress(Exception):
                await drop_database(as_service(svc).db_url(svc))


async def test_intake_and_disbursement_work_under_their_own_identity(deployed, infra):
    """The whole chain with every party on its own NATS identity: registry events (as
    svc-registry) reach intake and disbursement; intake's registry lookup is answered across
    identities (request-reply with per-identity inboxes); a payment cycle (svc-disbursement)
    reaches the channel `pos` through its own consumer and the auditor through its own."""
    from services.kit.auth import Principal, Role, issue_token
    from tests import disbursement_support as ds

    run = "t" + uuid.uuid4().hex[:10]

    def as_service(svc: str) -> Settings:
        return Settings(nats_url=deployed.url, nats_user=f"svc-{svc}", nats_password=deployed.passwords[f"svc-{svc}"],
                        database_url=infra[1], db_prefix=f"sinergi_{run}_", outbox_poll_seconds=0.02, _env_file=None)

    def bearer(role: Role, area: str) -> dict:
        return {"Authorization": f"Bearer {issue_token(Principal('u-' + role.value, role, area), as_service('intake').auth_secret)}"}

    persons = ds.people(3, seed=11)
    mark = deployed.log_mark()
    reg = await Party("svc-registry").connect(deployed)
    pos = await Party("channel-pos").connect(deployed)
    aud = await Party("auditor-inspektorat").connect(deployed)
    try:
        async with running("registry", as_service("registry")), running("intake", as_service("intake")) as intake, \
                running("disbursement", as_service("disbursement")) as disb:
            # the registry's events, published under the registry's identity
            await ds.publish_enrolments(reg.nc.jetstream(), Settings(_env_file=None), persons, "kamalia_merekah")
            pm = bearer(Role.program_manager, "")
            for path, body in (("/programs/kamalia_merekah", ds.KAMALIA),
                               ("/poverty-lines/3317/2026", {"amount": 600_000, "reason": "BPS 2026"}),
                               ("/allocations/csr/kamalia_merekah/2026", {"ceiling": 10 * 600_000, "reason": "MoU"})):
                r = await disb.http.put(path, json=body, headers=pm)
                assert r.status_code == 200, r.text

            async def previewed():
                r = await disb.http.post("/cycles/kamalia_merekah/2026-11/preview", headers=pm)
                # wait until disbursement has consumed every enrolment, or the cycle pays no one
                return r.status_code == 200 and r.json()["eligible_pending"] == len(persons) and r.json()
            await eventually(previewed, timeout=20)
            # maker-checker: prepared by one program manager, approved by another
            r = await ds.run_cycle(disb.http, as_service("disbursement"), "kamalia_merekah", "2026-11")
            assert r.status_code in (200, 201), r.text

            sub = await pos.nc.jetstream().pull_subscribe("channel.pos.instructions", durable="instructions-pos",
                                                          stream="CHANNEL")

            got: list[dict] = []

            async def instructed():  # (earlier tests left probe messages on the subject: skip them)
                with contextlib.suppress(Exception):
                    got.extend(json.loads(m.data) for m in await _fetch(sub, 10, timeout=0.5))
                return [d for g in got for d in g.get("disbursements", [])]
            paid = await eventually(instructed, timeout=20)
            assert {d["payee_id"] for d in paid} <= {p["nik"] for p in persons}

            audit_sub = await aud.nc.jetstream().pull_subscribe("disbursement.>", durable="audit-inspektorat",
                                                                stream="DISBURSEMENT")
            assert await _fetch(audit_sub, 5)

            # intake asks the registry (request-reply across identities) when registering a case
            village = persons[0]["village_code"]
            body = {"reporter": {"nik": persons[0]["nik"]}, "village_code": village, "category": "not_receiving_aid",
                    "channel": "walk_in", "kind": "complaint", "text": "Bantuan belum diterima"}
            r = await intake.http.post("/cases", json=body, headers=bearer(Role.village_office, village))
            assert r.status_code == 201, r.text
        # nothing any party did on the way was refused by the server
        assert deployed.violations_since(mark) == []
    finally:
        for p in (reg, pos, aud):
            await p.close()
        from services.kit.db import drop_database
        for svc in ("registry", "intake", "disbursement"):
            with contextlib.suppress(Exception):
                await drop_database(as_service(svc).db_url(svc))


async def test_ops_works_the_dead_letter_queue_and_no_data_stream(deployed):
    """`sinergi status` and `sinergi deadletter list/show/discard` as `ops` (kit.ops): dead
    letters are read and deleted; data streams are neither read nor written."""
    from contracts.subjects import Names
    from services.kit import ops as kops
    from services.kit.outbox import dead_letter

    svc = await Party("svc-registry").connect(deployed)
    letter = dead_letter("registry", "agency.pkh.enrolments", b'{"x": 1}', "rjct.test", "permissions test")
    ack = await svc.nc.jetstream().publish("deadletter.registry", letter.model_dump_json().encode())
    await svc.close()
    ops = await Party("ops").connect(deployed)
    try:
        js, names = ops.nc.jetstream(), Names("")
        listed = await kops.list_letters(js, names, service="registry", idle=1.0)
        assert ack.seq in [x.seq for x in listed]
        assert (await kops.get_letter(js, names, ack.seq)).letter.reason_code == "rjct.test"
        await kops.discard(js, names, ack.seq)
        with pytest.raises(Exception):
            await js.get_msg("REGISTRY", 1)
        assert not await ops.allowed(["agency.pkh.enrolments", "registry.events.people_registered"])
    finally:
        await ops.close()


async def test_dukcapil_notifies_deaths_and_reads_only_its_receipts(deployed, infra):
    """Dukcapil publishes a death notification as `dukcapil`; the registry (svc-registry) answers
    on crvs.dukcapil.receipts; Dukcapil reads it through its one consumer. It cannot report
    enrolments, read an agency's receipts, or publish the registry's answers itself; an agency
    cannot notify deaths."""
    from tests.integration.test_registry_life import death, notification

    run = "t" + uuid.uuid4().hex[:10]
    registry = Settings(nats_url=deployed.url, nats_user="svc-registry", nats_password=deployed.passwords["svc-registry"],
                        database_url=infra[1], db_prefix=f"sinergi_{run}_", outbox_poll_seconds=0.02, _env_file=None)
    mark = deployed.log_mark()
    dukcapil = await Party("dukcapil").connect(deployed)
    pkh = await Party("agency-pkh").connect(deployed)
    note = notification([death(factories.enrolment("pkh")["nik"], "e-1")])
    try:
        async with running("registry", registry):
            ack = await dukcapil.nc.jetstream().publish("crvs.dukcapil.deaths", json.dumps(note).encode(),
                                                        headers={"Nats-Msg-Id": f"dukcapil:{note['header']['message_id']}"})
            assert ack.stream == "CRVS"
            sub = await dukcapil.nc.jetstream().pull_subscribe("crvs.dukcapil.receipts", durable="receipts-dukcapil",
                                                               stream="CRVS_RECEIPTS")

            async def my_receipt():
                with contextlib.suppress(Exception):
                    for m in await _fetch(sub, 10, timeout=0.5):
                        r = json.loads(m.data)
                        if r["message_id"] == note["header"]["message_id"]:
                            return r
            receipt = await eventually(my_receipt, timeout=20)
            assert receipt["status"] == "succ" and receipt["notify_status"][0]["reference_id"] == "e-1"
            assert deployed.violations_since(mark, "svc-") == []
        for subject in ("agency.pkh.enrolments", "crvs.dukcapil.receipts", "registry.events.life_status_changed"):
            assert not await dukcapil.may_publish(subject)
        assert not await pkh.may_publish("crvs.dukcapil.deaths")
        with pytest.raises(Exception):
            await dukcapil.nc.jetstream(timeout=1).pull_subscribe("agency.pkh.receipts", durable="receipts-dukcapil",
                                                                  stream="AGENCY_RECEIPTS")
    finally:
        await dukcapil.close()
        await pkh.close()
        from services.kit.db import drop_database
        with contextlib.suppress(Exception):
            await drop_database(registry.db_url("registry"))
