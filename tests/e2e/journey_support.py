"""The whole system for one journey test, driven only from outside (issue 17).

`whole_system(settings, folder)` starts registry, intake, disbursement and reporting in this
process, each with its real consumers, outbox relay, timers and database, on the test's real
NATS and PostgreSQL (tests/conftest.py: its own stream and subject prefix and databases), with
what `sinergi up` gives them: staff accounts in a users file (tokens come from `POST
/auth/token` with a password), disbursement's signing and pseudonym keys, and reporting
checking every disbursement event against the regency's public key.

A journey then acts only as the people and systems outside would:
- a program agency publishes enrolment reports on `agency.<program>.enrolments` (raw JSON,
  `Nats-Msg-Id` = `<program>:<message_id>`) and reads its receipts (`System.enrol`);
- staff log in and call the HTTP routes of each service (`System.call`);
- a bank or the post office reads `channel.<c>.instructions` and answers `on-disburse` on
  `channel.<c>.settlements` (`Bank`);
- Dukcapil publishes death notifications on its own subject.
No event of one service is ever built by the test: every service hears the others' events.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats.errors
import nats.js.api

from services.kit.migrations import migrate
from services.kit.principal import Role
from services.kit.settings import Settings
from services.kit.users import UsersFile
from tests import factories
from tests.conftest import eventually

PASSWORD = "journey-password-1"  # every account's; the accounts live only in the test's users file
# who works in the journeys (username -> role, area): two program managers for maker-checker
STAFF: dict[str, tuple[Role, str]] = {
    "pm-dinsos": (Role.program_manager, ""),
    "kadis": (Role.program_manager, ""),          # the kepala dinas approves what pm-dinsos prepares
    "verifier": (Role.verifier, ""),
    "slrt-kabupaten": (Role.kabupaten, ""),
    "coordinator": (Role.coordinator, ""),
    "pendamping-1": (Role.companion, "331701"),  # kecamatan Sumber
}
SERVICES = ("registry", "intake", "disbursement", "reporting")

# Kamalia Merekah as the regency runs it: the poverty line a month to elderly people (60+) who
# are verified, paid cash at the post office from a CSR fund (disbursement's program rules)
KAMALIA = {
    "name": "Kamalia Merekah", "amount": {"kind": "poverty_line", "regency": "3317"},
    "require_verified": True, "min_age": 60, "funding_mode": "order",
    "funding": [{"source": "csr"}], "exclusivity_class": "cash_elderly", "channel": "pos",
}
POVERTY_LINE = 600_000


def _keys(folder: Path) -> tuple[Path, Path]:
    """An Ed25519 key pair as `sinergi up` makes one: (private PEM for disbursement, public PEM
    for reporting)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    key = Ed25519PrivateKey.generate()
    private, public = folder / "signing.pem", folder / "signing.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def _configs(folder: Path) -> dict[str, Any]:
    """Each service's own settings object, with the keys `sinergi up` would give it."""
    from services.disbursement.config import DisbursementSettings
    from services.reporting.settings import ReportingSettings
    private, public = _keys(folder)
    return {"disbursement": DisbursementSettings(signing_key_file=str(private), pseudonym_key=uuid.uuid4().hex,
                                                 state_dir=str(folder)),
            "reporting": ReportingSettings(disbursement_public_key_file=str(public))}


@dataclass
class Service:
    name: str
    http: httpx.AsyncClient


@dataclass
class System:
    settings: Settings
    nc: nats.NATS
    services: dict[str, Service]
    users: UsersFile
    _tokens: dict[str, str] = field(default_factory=dict)

    @property
    def js(self) -> Any:
        return self.nc.jetstream()

    def subject(self, bare: str) -> str:
        return self.settings.names.subject(bare)

    def add_staff(self, user: str, role: Role, area: str = "") -> None:
        """A new staff account (`sinergi users add`), e.g. the village office of one desa."""
        if user not in self.users.load():
            self.users.add(user, PASSWORD, role, area)

    async def login(self, user: str) -> dict[str, str]:
        """Log in as staff do (`POST /auth/token`, password form) and keep the bearer token."""
        if user not in self._tokens:
            r = await self.services["registry"].http.post("/auth/token",
                                                         data={"username": user, "password": PASSWORD})
            assert r.status_code == 200, r.text
            self._tokens[user] = r.json()["access_token"]
        return {"Authorization": f"Bearer {self._tokens[user]}"}

    async def call(self, service: str, method: str, path: str, *, as_: str, expect: int | None = 200,
                   **kw: Any) -> httpx.Response:
        """One HTTP call by a logged-in staff member; fails on another status than `expect`."""
        r = await self.services[service].http.request(method, path, headers=await self.login(as_), **kw)
        if expect is not None:
            assert r.status_code == expect, f"{method} {service}{path} as {as_}: {r.status_code} {r.text}"
        return r

    async def public(self, service: str, path: str, **kw: Any) -> httpx.Response:
        """A page anyone may open (no token)."""
        return await self.services[service].http.get(path, **kw)

    async def enrol(self, program: str, reports: list[dict], timeout: float = 20) -> dict[str, dict]:
        """An agency publishes reports on `agency.<program>.enrolments` and waits for a receipt
        for each (by message_id), as `sinergi agency publish` does."""
        got: dict[str, dict] = {}

        async def on_receipts(msg: Any) -> None:
            for r in factories.receipts_of(msg.data):
                got[r["message_id"]] = r
        sub = await self.nc.subscribe(self.settings.names.receipts(program), cb=on_receipts)
        try:
            for rep in reports:
                await self.js.publish(self.settings.names.enrolments(program), json.dumps(rep).encode(),
                                      headers={"Nats-Msg-Id": factories.msg_id(rep, program)})
            await eventually(lambda: all(r["message_id"] in got for r in reports), timeout=timeout)
        finally:
            await sub.unsubscribe()
        return got

    async def recap(self, period: str) -> dict:
        r = await self.public("reporting", "/reports/monthly", params={"period": period})
        assert r.status_code == 200, r.text
        return dict(r.json())

    def bank(self, channel: str) -> Bank:
        return Bank(self, channel)


class Bank:
    """A payment channel (bank, post office) as it sees Sinergi: the instructions and
    cancellations on `channel.<c>.instructions`, its answers on `channel.<c>.settlements`."""

    def __init__(self, system: System, channel: str) -> None:
        self.system, self.channel = system, channel
        self.disbursements: dict[str, dict] = {}   # disbursement_id -> the G2P Connect disbursement
        self.cancelled: dict[str, dict] = {}       # disbursement_id -> the cancellation item
        self.answered: set[str] = set()
        self._sub: Any = None

    async def read(self) -> Bank:
        """Everything published to this channel so far (an ephemeral consumer from the start)."""
        names = self.system.settings.names
        if self._sub is None:
            self._sub = await self.system.js.pull_subscribe(
                names.subject(f"channel.{self.channel}.instructions"), stream=names.stream("CHANNEL"),
                config=nats.js.api.ConsumerConfig(deliver_policy=nats.js.api.DeliverPolicy.ALL,
                                                  ack_policy=nats.js.api.AckPolicy.NONE))
        while True:
            try:
                msgs = await self._sub.fetch(100, timeout=0.3)
            except (nats.errors.TimeoutError, TimeoutError):
                return self
            for m in msgs:
                body = json.loads(m.data)
                for d in body.get("disbursements", []):
                    self.disbursements[d["disbursement_id"]] = d
                for c in body.get("cancellations", []):
                    self.cancelled[c["disbursement_id"]] = c

    async def wait_for(self, check: Any, timeout: float = 20) -> Bank:
        async def seen() -> bool:
            await self.read()
            return bool(check(self))
        await eventually(seen, timeout=timeout)
        return self

    def to(self, nik: str) -> list[dict]:
        """The disbursements issued to one person (payee_id is the NIK)."""
        return [d for d in self.disbursements.values() if d["payee_id"] == nik]

    def unanswered(self) -> list[str]:
        return [i for i in self.disbursements if i not in self.answered and i not in self.cancelled]

    async def answer(self, disbursement_ids: list[str], status: str = "succ", code: str | None = None) -> str:
        """The channel's `on-disburse` for these disbursements (paid: succ; refused: rjct + code)."""
        self.answered |= set(disbursement_ids)
        settlement_id = f"{self.channel}-{uuid.uuid4().hex[:12]}"
        now = dt.datetime.now(dt.UTC).isoformat()
        body = {"settlement_id": settlement_id, "results": [
            {"disbursement_id": i, "status": status, "status_reason_code": code, "timestamp": now,
             "channel_reference": f"REF-{i[:8]}"} for i in disbursement_ids]}
        ack = await self.system.js.publish(self.system.subject(f"channel.{self.channel}.settlements"),
                                           json.dumps(body).encode(),
                                           headers={"Nats-Msg-Id": f"{self.channel}:{settlement_id}"})
        assert not ack.duplicate
        return settlement_id

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()


async def _service(name: str, settings: Settings, cfg: Any, stack: contextlib.AsyncExitStack) -> Service:
    await migrate(name, settings.db_url(name))
    app = importlib.import_module(f"services.{name}.app").create_app(settings, cfg)
    await stack.enter_async_context(app.router.lifespan_context(app))
    client = await stack.enter_async_context(httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                               base_url=f"http://{name}"))
    return Service(name, client)


@contextlib.asynccontextmanager
async def whole_system(settings: Settings, folder: Path) -> AsyncIterator[System]:
    """All four services on the test's servers, with staff accounts and keys; see the module."""
    users = UsersFile(folder / "users.yaml")
    (folder / "users.yaml").write_text("users: []\n")
    for user, (role, area) in STAFF.items():
        users.add(user, PASSWORD, role, area)
    settings = settings.model_copy(update={"users_file": str(folder / "users.yaml")})
    cfgs = _configs(folder)
    async with contextlib.AsyncExitStack() as stack:
        services = {}
        for name in SERVICES:  # one after the other: each migrates its own database first
            services[name] = await _service(name, settings, cfgs.get(name), stack)
        nc = await nats.connect(settings.nats_url, name="journey-outside")
        stack.push_async_callback(nc.close)
        yield System(settings, nc, services, users)


async def set_up_kamalia(system: System, year: int, ceiling: int) -> None:
    """The Dinsos program manager writes Kamalia Merekah's rules, the poverty line and the CSR
    ceiling into disbursement, as on the first day of a fiscal year."""
    pm = "pm-dinsos"
    await system.call("disbursement", "PUT", "/programs/kamalia_merekah", as_=pm, json=KAMALIA)
    await system.call("disbursement", "PUT", f"/poverty-lines/3317/{year}", as_=pm,
                      json={"amount": POVERTY_LINE, "reason": f"BPS {year}"})
    await system.call("disbursement", "PUT", f"/allocations/csr/kamalia_merekah/{year}", as_=pm,
                      json={"ceiling": ceiling, "reason": f"MoU CSR {year}"})


def elderly(n: int, village: str, *, program: str = "kamalia_merekah", effective: str = "2026-01-05",
            first_serial: int = 1) -> list[dict]:
    """`n` enrolment reports of elderly women in `village`, each with a pickup at the post office."""
    out = []
    for i in range(n):
        birth = dt.date(1948, 3, 1 + i)
        serial = first_serial + i
        out.append(factories.enrolment(
            program, village_code=village, birth=birth, effective=effective, name=f"Mbah Sarni {serial}",
            nik=factories.nik(village, birth, "F", serial=serial), no_kk=f"{village[:6]}010120{serial:04d}",
            financial_address={"kind": "cash_pickup", "reference": f"POS-{serial:05d}"}))
    return out


def reported_by(program: str, report: dict, **changes: str) -> dict:
    """The same person as another agency reports them (a new message of that program)."""
    return report | {"message_id": str(uuid.uuid4()), "reference_id": f"{program.upper()}-{report['nik'][-6:]}",
                     "programme_identifier": program, "financial_address": None} | changes


async def verify(system: System, niks: list[str], result: str = "verified", area: str = "") -> str:
    """Verivali: the verifier opens a round (or uses the open one) and records each result."""
    r = await system.call("registry", "POST", "/verification-rounds", as_="verifier", json={"area": area},
                          expect=None)
    if r.status_code == 201:
        round_id = r.json()["round_id"]
    else:  # a round for this period is open already
        assert r.status_code == 409, r.text
        rounds = (await system.call("registry", "GET", "/verification-rounds", as_="verifier")).json()
        round_id = next(x["round_id"] for x in rounds if x["status"] == "open" and x["area"] == area)
    for nik in niks:
        await system.call("registry", "POST", f"/verification-rounds/{round_id}/results", as_="verifier",
                          json={"nik": nik, "result": result})
    return str(round_id)


async def run_cycle(system: System, program: str, period: str, *, expect_people: int | None = None) -> dict:
    """Maker-checker: pm-dinsos prepares the cycle, the kepala dinas approves it; the
    instructions leave. `expect_people`: first wait until the preview would pay that many (the
    registry's events reach disbursement asynchronously)."""
    if expect_people is not None:
        async def ready() -> bool:
            r = await system.call("disbursement", "POST", f"/cycles/{program}/{period}/preview", as_="pm-dinsos")
            return bool(r.json()["would_issue"] == expect_people)
        await eventually(ready, timeout=20, interval=0.2)
    prepared = (await system.call("disbursement", "POST", f"/cycles/{program}/{period}/prepare",
                                  as_="pm-dinsos")).json()
    approved = await system.call("disbursement", "POST", f"/cycles/preparations/{prepared['preparation_id']}/approve",
                                 as_="kadis")
    return dict(approved.json())


def program_row(recap: dict, program: str) -> dict:
    return next((p for p in recap["programs"] if p["programme_identifier"] == program),
                {"programme_identifier": program, "enrolled": 0, "people_paid": 0, "amount_paid": 0, "payments": 0})



def months_from_now() -> tuple[str, str, dt.date]:
    """(this month, next month, today) as YYYY-MM: a life status takes effect on a real day,
    and a cycle pays a month that starts on or after it."""
    today = dt.date.today()
    nxt = (today.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
    return f"{today:%Y-%m}", f"{nxt:%Y-%m}", today


async def set_up_kamalia_for(system: System, periods: list[str], people: int) -> None:
    """Kamalia Merekah's rules, poverty line and a CSR ceiling for twelve months of `people`,
    in every fiscal year the periods touch."""
    for year in sorted({int(p[:4]) for p in periods}):
        await set_up_kamalia(system, year, ceiling=12 * people * POVERTY_LINE)


async def assign_companion(system: System, nik: str, program: str, companion: str = "pendamping-1") -> str:
    """The coordinator assigns the person's monthly home visit to a companion (intake knows the
    beneficiary once the registry's enrolment event has reached it)."""
    async def assigned() -> str | None:
        r = await system.call("intake", "POST", "/assignments", as_="coordinator", expect=None,
                              json={"companion": companion, "nik": nik, "programme_identifier": program})
        assert r.status_code in (201, 404), r.text
        return str(r.json()["assignment_id"]) if r.status_code == 201 else None
    return str(await eventually(assigned, timeout=20, interval=0.2))


async def caseload(system: System, companion: str = "pendamping-1") -> list[str]:
    """The NIKs a companion must visit (the coordinator's view)."""
    r = await system.call("intake", "GET", f"/companions/{companion}/caseload", as_="coordinator")
    return [x["nik"] for x in r.json()["items"]]


async def reserved(system: System, program: str, source: str = "csr") -> int:
    """What the program's allocations of `source` hold reserved or paid (all fiscal years)."""
    items = (await system.call("disbursement", "GET", "/allocations", as_="pm-dinsos")).json()["items"]
    return sum(int(a["reserved"]) for a in items if a["programme_identifier"] == program and a["source"] == source)


async def life_status(system: System, nik: str) -> str:
    person = (await system.call("registry", "GET", f"/people/{nik}", as_="verifier")).json()
    return str(person["life_status"]["status"])


async def decide_dispute(system: System, nik: str, found: str, why: str) -> None:
    """The verifier takes the person's item from the data-quality queue and says what they found."""
    items = (await system.call("registry", "GET", "/data-quality", as_="verifier",
                               params={"kind": "death_while_active"})).json()["items"]
    (item,) = [i for i in items if i["nik"] == nik]
    r = await system.call("registry", "POST", f"/data-quality/{item['id']}/resolve", as_="verifier",
                          json={"resolution": why, "life_status": found})
    assert r.json()["life_status"] == found


async def dukcapil_death(system: System, nik: str, death_date: dt.date, certificate: str) -> dict:
    """Dukcapil (the civil registry) notifies a death in DCI's CRVS `notify` shape on its own
    subject and reads the registry's receipt."""
    message_id = f"dukcapil-{uuid.uuid4().hex[:10]}"
    body = {"signature": "unsigned",
            "header": {"version": "1.0.0", "message_id": message_id, "message_ts": dt.datetime.now(dt.UTC).isoformat(),
                       "action": "notify", "sender_id": "dukcapil", "receiver_id": "sinergi", "total_count": 1},
            "message": {"transaction_id": f"txn-{uuid.uuid4().hex[:8]}", "notify_event": [
                {"reference_id": f"ev-{certificate}", "timestamp": dt.datetime.now(dt.UTC).isoformat(),
                 "data": {"version": "1.0.0", "reg_type": "ns:org:RegistryType:CRVS", "reg_event_type": "DEATH",
                          "reg_record_type": "DeathCertificate",
                          "reg_records": {"identifier": [{"identifier_type": "NIK", "identifier_value": nik}],
                                          "death_date": death_date.isoformat(), "death_place": "Rembang",
                                          "registration_number": certificate,
                                          "registration_date": dt.date.today().isoformat()}}}]}}
    got: list[dict] = []

    async def on_receipt(msg: Any) -> None:
        got.append(json.loads(msg.data))
    sub = await system.nc.subscribe(system.settings.names.crvs_receipts(), cb=on_receipt)
    try:
        await system.js.publish(system.settings.names.crvs_deaths(), json.dumps(body).encode(),
                                headers={"Nats-Msg-Id": f"dukcapil:{message_id}"})
        await eventually(lambda: any(r["message_id"] == message_id for r in got), timeout=20)
    finally:
        await sub.unsubscribe()
    return next(r for r in got if r["message_id"] == message_id)


async def audit_events(system: System, event_type: str) -> list[dict]:
    """The events of one type on the auditors' stream (`disbursement.>`), read from the start
    as an auditor reads it (acknowledging nothing)."""
    names = system.settings.names
    sub = await system.js.pull_subscribe(
        names.subject("disbursement.>"), stream=names.stream("DISBURSEMENT"),
        config=nats.js.api.ConsumerConfig(deliver_policy=nats.js.api.DeliverPolicy.ALL,
                                          ack_policy=nats.js.api.AckPolicy.NONE))
    found: list[dict] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(200, timeout=0.3)
            except (nats.errors.TimeoutError, TimeoutError):
                return found
            found += [e for e in (json.loads(m.data) for m in msgs) if e.get("event_type") == event_type]
    finally:
        await sub.unsubscribe()
