"""Registry rules, no I/O: what a valid enrolment report is, which report wins, and what an
ingest batch changes (`plan_ingest`: store.write_plan writes it)."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping, Sequence, Set
import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

from pydantic import TypeAdapter, ValidationError

from contracts.agency import EnrolmentReport, EnrolmentStatus, Sex
from contracts.payee import FinancialAddress, Payee, Proxy
from contracts.values import Problem, kk_problems, nik_consistency, parse_nik, village_problems
from services.registry import names

_MISSING = {"missing": "is required", "string_type": "must be text", "bool_type": "must be true or false"}

# Every reason code a rejected receipt can carry (without the `rjct.` prefix), in plain words.
# Codes are stable: agencies match on them. docs/REGISTRY.md lists the same table.
REASONS: dict[str, str] = {
    "json.invalid": "the message is not valid JSON",
    "json.not_object": "the message is JSON but not one object",
    "<field>.missing": "a required field is absent (message_id, programme_identifier, nik, no_kk, name, sex, "
                       "birth_date, village_code, enrolment_status, status_change_date)",
    "<field>.string_type": "a field that must be text is not",
    "<field>.string_too_short": "a text field is empty (message_id, name)",
    "<field>.string_too_long": "a text field is longer than allowed",
    "<field>.string_unicode": "a text field holds an unpaired UTF-16 surrogate (e.g. \\ud800), which is not a "
                              "character",
    "<field>.nul_character": "a text field holds a NUL character (\\u0000), which the registry cannot store",
    "is_head_of_household.bool_parsing": "is_head_of_household is not true or false",
    "programme_identifier.mismatch": "programme_identifier differs from the program in the subject",
    "nik.format": "NIK is not exactly 16 digits",
    "nik.unknown_region": "the NIK's first six digits are not a known kecamatan code",
    "nik.invalid_birth_date": "the NIK's date part is not a real date (women: day + 40)",
    "nik.invalid_serial": "the NIK's serial part is 0000",
    "nik.birth_date_mismatch": "birth_date disagrees with the date encoded in the NIK",
    "nik.sex_mismatch": "sex disagrees with the NIK (day + 40 means female)",
    "kk.format": "No. KK is not exactly 16 digits",
    "kk.unknown_region": "the No. KK's first six digits are not a known kecamatan code",
    "kk.invalid_serial": "the No. KK's serial part is 0000",
    "village_code.format": "village_code is not a 10-digit Kemendagri code",
    "village_code.unknown": "village_code is not a known village (desa/kelurahan)",
    "sex.invalid": "sex is not F or M",
    "enrolment_status.invalid": "enrolment_status is not active, suspended, exited or deceased",
    "birth_date.format": "birth_date is not a date YYYY-MM-DD",
    "birth_date.in_future": "birth_date is after today",
    "status_change_date.format": "status_change_date is not a date YYYY-MM-DD",
    "status_change_date.too_far": "status_change_date is more than a year ahead",
    "status_change_date.before_birth": "status_change_date is before the birth date",
    "message_id.unscoped": "the Nats-Msg-Id header is not <program>:<message_id>",
}

# what PostgreSQL refuses in text (and in jsonb): NUL, and a surrogate that pairs with nothing
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_TEXT_FIELDS = tuple(f for f, info in EnrolmentReport.model_fields.items() if info.annotation is str)


def storable(text: str) -> str:
    """`text` with what PostgreSQL cannot store replaced by U+FFFD, for echoing a rejected
    message's ids and values back (its receipt is kept in a jsonb column)."""
    return _UNSTORABLE.sub("\ufffd", text)


def is_storable(text: str) -> bool:
    return _UNSTORABLE.search(text) is None


@dataclass(frozen=True)
class CheckedReport:
    """A report that passed every rule, with its values parsed."""

    report: EnrolmentReport
    program: str
    birth_date: dt.date
    status_change_date: dt.date
    village_code: str

    @property
    def nik(self) -> str:
        return self.report.nik

    @property
    def key(self) -> tuple[str, str]:
        return (self.report.nik, self.program)

    @property
    def order(self) -> tuple[dt.date, str]:
        """Later effective date wins; on a tie the greater message_id, so every replica agrees."""
        return (self.status_change_date, self.report.message_id)


def _date(value: str, field: str, problems: list[Problem]) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        problems.append(Problem(f"{field}.format", f"{field} {value!r} is not a date in the form YYYY-MM-DD", field))
        return None


def _nul_problems(rep: EnrolmentReport) -> list[Problem]:
    """PostgreSQL refuses NUL in text: caught here it is one rejected report, not a failed batch."""
    return [Problem(f"{f}.nul_character", f"{f} contains a NUL character (\\u0000), which the registry cannot "
                                          "store; remove it", f)
            for f in _TEXT_FIELDS if "\x00" in getattr(rep, f)]


def _scoped(header_id: str, program: str, message_id: str) -> bool:
    prefix = program + ":"
    return header_id.startswith(prefix) and header_id[len(prefix):].strip() == message_id


def check_report(data: bytes, subject_program: str, today: dt.date | None = None, header_id: str | None = None
                 ) -> tuple[CheckedReport | None, dict, list[Problem]]:
    """Apply every rule a data officer would; return the parsed report or every failed rule.

    `header_id` is the message's Nats-Msg-Id header, if it has one: it must be
    `<program>:<message_id>`, since JetStream de-duplicates it across every program's reports.
    Also returns what could be read of the raw message (for the receipt's ids).
    """
    today = today or dt.date.today()
    try:
        # the common case in one step (pydantic-core parses the JSON); only a report that fails
        # is parsed again, for the ids its receipt echoes and for naming every failed rule
        rep = EnrolmentReport.model_validate_json(data)
        raw = {"message_id": rep.message_id, "reference_id": rep.reference_id}
    except ValidationError:
        rep = None
    if rep is None:
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            return None, {}, [Problem("json.invalid", f"the message is not valid JSON ({exc})")]
        if not isinstance(raw, dict):
            return None, {}, [Problem("json.not_object", "the message must be one JSON object per person")]
    try:
        rep = rep or EnrolmentReport.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            problems.append(Problem(f"{field}.{err['type']}", f"{field} {_MISSING.get(err['type'], err['msg'])}", field))
        return None, raw, problems

    # a NUL can only arrive escaped (JSON forbids the raw byte), so most reports skip the field walk
    problems: list[Problem] = _nul_problems(rep) if b"\\u0000" in data else []
    if rep.programme_identifier != subject_program:
        problems.append(Problem("programme_identifier.mismatch",
                                f"programme_identifier {rep.programme_identifier!r} does not match the subject's "
                                f"program {subject_program!r}", "programme_identifier"))
    parts, nik_errs = parse_nik(rep.nik, today)
    problems += nik_errs
    problems += kk_problems(rep.no_kk)
    problems += village_problems(rep.village_code)
    if rep.sex not in (Sex.F, Sex.M):
        problems.append(Problem("sex.invalid", f"sex must be F or M, not {rep.sex!r}", "sex"))
    if rep.enrolment_status not in EnrolmentStatus.__members__:
        problems.append(Problem("enrolment_status.invalid",
                                f"enrolment_status must be one of active, suspended, exited, deceased, "
                                f"not {rep.enrolment_status!r}", "enrolment_status"))
    birth = _date(rep.birth_date, "birth_date", problems)
    effective = _date(rep.status_change_date, "status_change_date", problems)
    if birth and birth > today:
        problems.append(Problem("birth_date.in_future", f"birth_date {birth} is in the future", "birth_date"))
    if effective and effective > today + dt.timedelta(days=366):
        problems.append(Problem("status_change_date.too_far", "status_change_date is more than a year ahead",
                                "status_change_date"))
    if birth and effective and effective < birth:
        problems.append(Problem("status_change_date.before_birth", "status_change_date is before the birth date",
                                "status_change_date"))
    if parts is not None:
        problems += nik_consistency(parts, birth, rep.sex if rep.sex in ("F", "M") else None)
    problems += payee_problems(rep)
    if header_id is not None and not _scoped(header_id, subject_program, rep.message_id):
        shown = header_id if len(header_id) <= 140 else header_id[:140] + "..."
        problems.append(Problem(
            "message_id.unscoped",
            f"the Nats-Msg-Id header {shown!r} must be {subject_program + ':' + rep.message_id!r} "
            f"(<program>:<message_id>): JetStream de-duplicates Nats-Msg-Id across every program, so an "
            f"unscoped id can be swallowed by another program's message with the same id", "message_id"))
    if problems:
        return None, raw, problems
    assert birth and effective
    return CheckedReport(rep, subject_program, birth, effective, rep.village_code.replace(".", "")), raw, []


_FA = TypeAdapter(FinancialAddress)


def payee_problems(rep: EnrolmentReport) -> list[Problem]:
    """A financial address and proxy, when reported, must be ones a payment channel can act on."""
    out: list[Problem] = []
    for field, check in (("financial_address", _FA.validate_python), ("proxy", Proxy.model_validate)):
        value = getattr(rep, field)
        if value is None:
            continue
        try:
            check(value)
        except ValidationError as exc:
            where = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or field}: {e['msg']}" for e in exc.errors()[:3])
            out.append(Problem(f"{field}.invalid", f"{field} is not usable ({where})", field))
    return out


def payee_json(rep: EnrolmentReport) -> str | None:
    """The payee details a report carries (contracts.payee.Payee as JSON), or None: none reported."""
    if rep.financial_address is None and rep.proxy is None:
        return None
    return Payee(name=rep.name, financial_address=_FA.validate_python(rep.financial_address)
                 if rep.financial_address is not None else None,
                 proxy=Proxy.model_validate(rep.proxy) if rep.proxy is not None else None).model_dump_json()


def winners(reports: list[CheckedReport]) -> dict[tuple[str, str], CheckedReport]:
    """The report that wins per (NIK, program) within one batch."""
    best: dict[tuple[str, str], CheckedReport] = {}
    for r in reports:
        cur = best.get(r.key)
        if cur is None or r.order > cur.order:
            best[r.key] = r
    return best


def supersedes(new: CheckedReport, current_date: dt.date | None, current_msg: str | None) -> bool:
    if current_date is None:
        return True
    return new.order > (current_date, current_msg or "")


# ---- cross-program conflicts (for the data-quality queue) ----

def identity_conflicts(current_name: str, current_birth: dt.date, current_by: str,
                       new: CheckedReport) -> list[str]:
    """What another program's report disagrees on (ConflictKind values). A program correcting its
    own earlier report is not a conflict; spelling variants of one name are not either."""
    if not current_by or current_by == new.program:
        return []
    kinds = []
    if names.normalise(current_name) != names.normalise(new.report.name):
        kinds.append("name_mismatch")
    if current_birth != new.birth_date:
        kinds.append("birth_date_mismatch")
    return kinds


def fingerprint(kind: str, *parts: str) -> str:
    """The same disagreement (same programs, same values) is flagged once, however often it is reported."""
    return hashlib.sha256("|".join([kind, *sorted(parts)]).encode()).hexdigest()[:32]


# ---- an ingest batch as a plan: what to write, decided without I/O (store.write_plan writes it) ----

# a person's identity (what person_history keeps), and the people row besides its nik
IDENTITY = ("no_kk", "name", "sex", "birth_date", "village_code", "address")
PERSON_COLUMNS = (*IDENTITY, "name_key", "reported_by")


@dataclass(frozen=True)
class Person:
    """A person as the registry holds them: their `people` row, read under its lock."""

    nik: str
    no_kk: str
    name: str
    sex: str
    birth_date: dt.date
    village_code: str
    address: str
    name_key: str
    reported_by: str
    verification_status: str | None = None
    verification_period: str | None = None


@dataclass(frozen=True)
class Enrolment:
    """A person's current status in one program: their `enrolments` row."""

    enrolment_status: str
    status_change_date: dt.date
    message_id: str


class IdentityOutcome(NamedTuple):
    """A person's identity after a batch: the people row (PERSON_COLUMNS) if it changed, else
    None; the identities to keep in person_history; the disagreements to queue."""

    row: dict | None
    history: list[dict]
    conflicts: list[dict]


def identity_after(nik: str, old: dict | None, reports: Sequence[CheckedReport]) -> IdentityOutcome:
    """A person's identity after this batch's reports (in effective order) on top of `old` (a
    people row; None: new to the registry). The first program to report a person sets the name
    and birth date; another program agreeing may update household, village and address; one
    disagreeing leaves the identity alone and raises a conflict for a verifier."""
    cur, history, conflicts = old, [], []
    for r in reports:
        rep = r.report
        if cur is not None:
            kinds = identity_conflicts(cur["name"], cur["birth_date"], cur["reported_by"], r)
            if kinds:  # keep the identity we have; a verifier decides
                for kind in kinds:
                    field = "name" if kind == "name_mismatch" else "birth_date"
                    conflicts.append({
                        "nik": nik, "kind": kind, "village_code": cur["village_code"],
                        "fingerprint": fingerprint(kind, f"{cur['reported_by']}={cur[field]}",
                                                   f"{r.program}={getattr(rep, field)}"),
                        "programme_identifiers": sorted({cur["reported_by"], r.program}),
                        "details": {"registry": {field: str(cur[field]), "reported_by": cur["reported_by"]},
                                    "report": {field: str(getattr(rep, field)), "reported_by": r.program,
                                               "message_id": rep.message_id}}})
                continue
        row = {"no_kk": rep.no_kk, "name": rep.name, "sex": rep.sex, "birth_date": r.birth_date,
               "village_code": r.village_code, "address": rep.address, "name_key": names.normalise(rep.name),
               "reported_by": r.program}
        if cur is not None and cur["reported_by"] and cur["reported_by"] != r.program:
            # another program agreeing on the identity: it may update the household and
            # address, but the name keeps the spelling of the program that set it
            row |= {k: cur[k] for k in ("name", "name_key", "birth_date", "reported_by")}
        if cur is None or any(cur[k] != row[k] for k in IDENTITY):
            history.append({"nik": nik, **{k: row[k] for k in IDENTITY}, "reported_by": row["reported_by"],
                            "message_id": rep.message_id})
        cur = row
    return IdentityOutcome(cur if history else None, history, conflicts)


@dataclass(frozen=True)
class Batch:
    """A batch's accepted reports, grouped per person (each person's in effective order), with
    the identity each person would have if new to the registry: new people are inserted before
    anyone is locked, and the plan reuses that outcome for those the insert created."""

    reports: tuple[CheckedReport, ...]
    by_nik: Mapping[str, tuple[CheckedReport, ...]]
    as_new: Mapping[str, IdentityOutcome]

    @classmethod
    def of(cls, valid: Sequence[CheckedReport]) -> Batch:
        grouped: dict[str, list[CheckedReport]] = {}
        for r in valid:
            grouped.setdefault(r.nik, []).append(r)
        by_nik = {nik: tuple(sorted(rs, key=lambda x: x.order) if len(rs) > 1 else rs) for nik, rs in grouped.items()}
        as_new = {nik: identity_after(nik, None, by_nik[nik]) for nik in sorted(by_nik)}
        return cls(tuple(valid), by_nik, as_new)

    @property
    def niks(self) -> set[str]:
        return set(self.by_nik)

    def new_people(self) -> list[dict]:
        """A people row for everyone in the batch, as if new; the store inserts those it lacks."""
        return [{"nik": nik, **outcome.row} for nik, outcome in self.as_new.items() if outcome.row is not None]


@dataclass(frozen=True)
class IngestPlan:
    """Everything one ingest batch writes, in the order the store writes it, and what it announces."""

    people: tuple[dict, ...]  # upserts of people already in the registry whose identity changed
    person_history: tuple[dict, ...]
    name_trigrams: tuple[tuple[str, str, set[str]], ...]  # (nik, village, trigrams); only without pg_trgm
    households: tuple[dict, ...]  # in No. KK order: concurrent batches lock them in the same order
    enrolment_history: tuple[dict, ...]  # every accepted report, in arrival order
    enrolments: tuple[dict, ...]  # at most one per (nik, program): the batch's winner, if it supersedes
    registered: tuple[dict, ...]  # registry.people_registered items
    changes: tuple[dict, ...]  # registry.enrolments_changed items, one per enrolment written
    conflicts: tuple[dict, ...]  # data_quality rows (the store gives them ids)
    life: LifePlan = dataclasses.field(default_factory=lambda: LifePlan())  # life status changes (issue 17)


def plan_ingest(batch: Batch, people: Mapping[str, Person], enrolments: Mapping[tuple[str, str], Enrolment],
                created: Set[str], *, trigram_table: bool = False, lives: Mapping[str, Life] | None = None
                ) -> IngestPlan:
    """What a batch of accepted reports changes, given the batch's people as locked (`people`;
    those the batch just `created` are not in it), every current enrolment of those people, and
    whether name search needs the trigram table. Pure: the same input gives the same plan."""
    people_rows: list[dict] = []
    history: list[dict] = []
    conflicts: list[dict] = []
    trigram_rows: list[tuple[str, str, set[str]]] = []
    registered: list[dict] = []
    households: dict[str, dict] = {}
    for nik, reports in batch.by_nik.items():
        for r in reports:
            rep = r.report
            if rep.is_head_of_household or rep.no_kk not in households:
                households[rep.no_kk] = {"no_kk": rep.no_kk, "village_code": r.village_code,
                                         "head_nik": nik if rep.is_head_of_household else None}
        old = people.get(nik)
        if nik in created:
            outcome = batch.as_new[nik]
        else:
            # (old is None only if the person vanished between insert and lock: the upsert writes them again)
            outcome = identity_after(nik, {k: getattr(old, k) for k in PERSON_COLUMNS} if old else None, reports)
            if outcome.row is not None:
                people_rows.append({"nik": nik, **outcome.row})
        history += outcome.history
        conflicts += outcome.conflicts
        ident = outcome.row
        if ident is not None:
            if trigram_table and (old is None or old.name_key != ident["name_key"]
                                  or old.village_code != ident["village_code"]):
                trigram_rows.append((nik, ident["village_code"], names.trigrams(ident["name_key"])))
            registered.append({"nik": nik, "no_kk": ident["no_kk"], "name": ident["name"], "sex": ident["sex"],
                               "birth_date": ident["birth_date"].isoformat(), "village_code": ident["village_code"],
                               "is_new": nik in created, "reported_by": ident["reported_by"]})

    enrolment_history = tuple(
        {"nik": r.nik, "programme_identifier": r.program, "enrolment_status": r.report.enrolment_status,
         "status_change_date": r.status_change_date, "message_id": r.report.message_id,
         "reference_id": r.report.reference_id, "reported_by": r.program} for r in batch.reports)
    enrol_rows: list[dict] = []
    changes: list[dict] = []
    status = {k: e.enrolment_status for k, e in enrolments.items()}  # (nik, program) -> status after this batch
    for key, r in winners(batch.reports).items():
        cur_e = enrolments.get(key)
        if not supersedes(r, cur_e.status_change_date if cur_e else None, cur_e.message_id if cur_e else None):
            continue
        rep = r.report
        status[key] = rep.enrolment_status
        person = people.get(r.nik)
        payee = payee_json(rep)
        enrol_rows.append({"nik": r.nik, "programme_identifier": r.program,
                           "enrolment_status": rep.enrolment_status, "status_change_date": r.status_change_date,
                           "message_id": rep.message_id, "reference_id": rep.reference_id, "reported_by": r.program,
                           "payee": payee})
        changes.append({
            "nik": r.nik, "no_kk": rep.no_kk, "village_code": r.village_code, "birth_date": r.birth_date.isoformat(),
            "programme_identifier": r.program, "enrolment_status": rep.enrolment_status,
            "previous_status": cur_e.enrolment_status if cur_e else None,
            "status_change_date": r.status_change_date.isoformat(), "reported_by": r.program,
            "reference_id": rep.reference_id,
            "verification_status": person.verification_status if person else None,
            "verification_period": person.verification_period if person else None,
            "payee": json.loads(payee) if payee else None})
    life, disputed_after = _life_after(batch, enrolments, enrol_rows, created, lives or {})
    # a death while another program pays is the verifier's only while it is the person's dispute:
    # not after Dukcapil recorded the death, nor once a verifier has decided
    conflicts += [c for c in deaths_while_active(status, batch.by_nik) if c["nik"] in disputed_after]
    return IngestPlan(tuple(people_rows), tuple(history), tuple(trigram_rows),
                      tuple(households[k] for k in sorted(households)), enrolment_history, tuple(enrol_rows),
                      tuple(registered), tuple(changes), tuple(conflicts), life)


def _life_after(batch: Batch, enrolments: Mapping[tuple[str, str], Enrolment], written: Sequence[dict],
                created: Set[str], lives: Mapping[str, Life]) -> tuple[LifePlan, set[str]]:
    """plan_life for an ingest batch, and the NIKs in dispute after it. Only people a program
    reports deceased, or with a life status already, need a decision: the others are skipped
    before anything is built for them (measured: 2,000-report batches of the bench's mix spent
    6 us a report here when every person was looked at, about 1 us now)."""
    after_batch = {(r["nik"], r["programme_identifier"]): (r["enrolment_status"], r["status_change_date"])
                   for r in written}
    dead = {k[0] for k, v in after_batch.items() if v[0] == "deceased"}
    dead |= {k[0] for k, e in enrolments.items() if e.enrolment_status == "deceased" and k not in after_batch}
    look = dead | (lives.keys() & batch.by_nik.keys())
    enrolled: dict[str, dict[str, tuple[str, dt.date]]] = {}
    for (nik, program), e in enrolments.items():
        if nik in look:
            enrolled.setdefault(nik, {})[program] = (e.enrolment_status, e.status_change_date)
    for (nik, program), v in after_batch.items():
        if nik in look:
            enrolled.setdefault(nik, {})[program] = v
    changed = {row["nik"]: batch.by_nik[row["nik"]] for row in written}
    life = plan_life(batch, enrolled, changed, lives, created)
    after = {row["nik"]: row["status"] for row in life.rows}
    disputed = {nik for nik, st in after.items() if st == "disputed"}
    disputed |= {nik for nik, lf in lives.items() if lf.status == "disputed" and nik not in after}
    return life, disputed


def deaths_while_active(status: Mapping[tuple[str, str], str], by_nik: Mapping[str, Sequence[CheckedReport]]
                        ) -> list[dict]:
    """A death reported by one program while another still has the person active, for the batch's
    people (`status`: every (nik, program) after the batch). Exact: read under the people locks."""
    programs: dict[str, dict[str, list[str]]] = {}
    for (nik, program), st in sorted(status.items()):
        if st in ("deceased", "active"):
            programs.setdefault(nik, {"deceased": [], "active": []})[st].append(program)
    return [{"nik": nik, "kind": "death_while_active", "village_code": by_nik[nik][-1].village_code,
             "fingerprint": fingerprint("death_while_active", *[f"deceased={x}" for x in p["deceased"]],
                                        *[f"active={x}" for x in p["active"]]),
             "programme_identifiers": sorted({*p["deceased"], *p["active"]}),
             "details": {"deceased_in": p["deceased"], "active_in": p["active"]}}
            for nik, p in programs.items() if p["deceased"] and p["active"] and nik in by_nik]


# ---- verivali ----

def round_period(day: dt.date, cadence: str) -> str:
    """The period a verification round opened on `day` covers: 2026-11 (monthly) or 2026-H2 (semiannual)."""
    if cadence == "monthly":
        return f"{day.year}-{day.month:02d}"
    if cadence == "semiannual":
        return f"{day.year}-H{1 if day.month <= 6 else 2}"
    raise ValueError(f"unknown verification cadence {cadence!r}; use monthly or semiannual")


# ---- life status (issue 17): one person-level fact, whichever program or source reported it ----

# Who may overturn whom: the civil registry's death notification outranks a verifier's decision,
# which outranks a program's report. "" is the default status nobody reported (alive).
LIFE_RANK = {"": 0, "agency": 1, "verifier": 2, "crvs": 3}
# the reason code of a receipt for a program's `active` report about a person the civil
# registry recorded deceased: the report is stored (`succ`), the person stays deceased
RECORDED_DECEASED = "info.life.deceased_in_civil_registry"


@dataclass(frozen=True)
class Life:
    """A person's life status as the registry holds it (`life_status`; no row: alive)."""

    status: str = "alive"            # contracts.registry.LifeStatus
    source: str = ""                 # contracts.registry.LifeSource; "" never reported
    effective_date: dt.date | None = None
    reported_by: str = ""
    reason_code: str = ""
    reason: str = ""


ALIVE = Life()


@dataclass(frozen=True)
class LifeFact:
    """What one source says about a person's life: `status` is a LifeStatus (an agency's
    derived claim may be `disputed`: one program deceased, another active)."""

    status: str
    source: str
    effective_date: dt.date
    reported_by: str
    reason_code: str
    reason: str = ""


class LifeDecision(NamedTuple):
    life: Life          # the status after the fact (== current: nothing to write)
    announce: bool      # the status changed: one LifeStatusChanged item
    dispute: bool       # a verifier must decide (the data-quality queue)


def decide_life(current: Life, fact: LifeFact) -> LifeDecision:
    """The life status after `fact`, given `current`. Rules (docs/REGISTRY.md):

    - a weaker source never overturns a stronger one (crvs > verifier > agency), with one
      exception: a program's death dated after a verifier confirmed the person alive is a new
      fact (people die after being verified);
    - the same status again changes nothing (a second program's death announces nothing); a
      stronger source confirming it takes over the record silently;
    - programs disagreeing (`disputed`) put the person in dispute until a verifier decides: no
      program's later report lifts it, except all of them agreeing the person is deceased.
    """
    keep = LifeDecision(current, False, False)
    new = Life(fact.status, fact.source, fact.effective_date, fact.reported_by, fact.reason_code, fact.reason)
    weaker = LIFE_RANK[fact.source] < LIFE_RANK[current.source]
    if weaker and not (fact.source == "agency" and fact.status == "deceased" and current.status == "alive"
                       and current.effective_date is not None and fact.effective_date > current.effective_date):
        return keep
    if fact.status == current.status:
        # a stronger source confirming a stop takes the record over (a program's later `active`
        # cannot dispute a death Dukcapil confirmed); "alive" confirmed needs no record
        if fact.status != "alive" and LIFE_RANK[fact.source] > LIFE_RANK[current.source]:
            return LifeDecision(new, False, False)
        return keep
    if fact.source == "agency":
        if current.status == "disputed" and fact.status != "deceased":
            return keep
        if fact.status == "alive" and current.status != "deceased":
            return keep
    return LifeDecision(new, True, fact.status == "disputed")


def agency_life_fact(enrolled: Mapping[str, tuple[str, dt.date]], changed: Sequence[CheckedReport]
                     ) -> LifeFact | None:
    """What the programs' enrolment statuses after a batch (`enrolled`: program -> (status,
    effective date), one person) say about that person's life: a death in some program and
    `active` in another is `disputed`; a death alone `deceased`; no death at all `alive` (a
    program correcting its own death report). None: the batch changed none of their enrolments."""
    if not changed:
        return None
    dead = sorted((when, p) for p, (st, when) in enrolled.items() if st == "deceased")
    active = sorted(p for p, (st, _) in enrolled.items() if st == "active")
    if dead:
        when, first = dead[0]
        if active:
            return LifeFact("disputed", "agency", when, first, "conflict.deceased_vs_active",
                            f"deceased in {', '.join(p for _, p in dead)}; active in {', '.join(active)}")
        return LifeFact("deceased", "agency", when, first, "agency.deceased")
    last = max(changed, key=lambda r: r.order)
    return LifeFact("alive", "agency", last.status_change_date, last.program, "agency.corrected")


@dataclass(frozen=True)
class LifePlan:
    """What an ingest batch changes in life status (store.write_life writes it)."""

    rows: tuple[dict, ...] = ()          # life_status upserts
    history: tuple[dict, ...] = ()       # life_history rows
    changes: tuple[dict, ...] = ()       # LifeStatusChange items (conflict_id filled in by the store)
    disputed: frozenset[str] = frozenset()  # NIKs whose change needs the data-quality item's id
    # (program, message_id) of `active` reports about people the civil registry recorded deceased
    recorded_deceased: frozenset[tuple[str, str]] = frozenset()


def life_row(nik: str, life: Life) -> dict:
    return {"nik": nik, "status": life.status, "source": life.source, "effective_date": life.effective_date,
            "reported_by": life.reported_by, "reason_code": life.reason_code, "reason": life.reason}


def life_change(nik: str, village_code: str, before: Life, after: Life, programs: Sequence[str]) -> dict:
    """A contracts.registry.LifeStatusChange item (JSON-ready; conflict_id added by the store)."""
    return {"nik": nik, "village_code": village_code, "life_status": after.status, "previous_status": before.status,
            "effective_date": (after.effective_date or dt.date.today()).isoformat(), "source": after.source,
            "reported_by": after.reported_by, "reason_code": after.reason_code,
            "programme_identifiers": list(programs), "conflict_id": None}


def plan_life(batch: Batch, enrolled: Mapping[str, Mapping[str, tuple[str, dt.date]]],
              changed: Mapping[str, Sequence[CheckedReport]], lives: Mapping[str, Life], created: Set[str]
              ) -> LifePlan:
    """Life status after an ingest batch, for the batch's people: `enrolled` holds the
    enrolments after the batch (nik -> program -> (status, effective date)) of those a program
    reports deceased (everyone else without a life status is alive, with nothing to decide),
    `changed` the
    reports that changed an enrolment,
    `lives` the current life status of those who have one. A person new to the registry whom
    a source already recorded (Dukcapil reports deaths of people no program knows yet) has that
    status announced now, when programs start to know them."""
    rows, history, changes, disputed, recorded = [], [], [], set(), set()
    for nik, reports in batch.by_nik.items():
        if nik not in lives and nik not in enrolled:
            continue  # alive, and no program says otherwise: nearly everyone, decided without a fact
        mine = enrolled.get(nik, {})
        current = lives.get(nik, ALIVE)
        programs = sorted(mine)
        village = reports[-1].village_code
        if current.source == "crvs" and current.status == "deceased":
            recorded |= {(r.program, r.report.message_id) for r in reports if r.report.enrolment_status == "active"}
        if nik in created and current.status != "alive":
            changes.append(life_change(nik, village, ALIVE, current, programs))
            history.append({**life_row(nik, current), "previous_status": "alive"})
            continue
        fact = agency_life_fact(mine, changed.get(nik, ()))
        if fact is None:
            continue
        decision = decide_life(current, fact)
        if decision.life == current:
            continue
        rows.append(life_row(nik, decision.life))
        if decision.announce:
            history.append({**life_row(nik, decision.life), "previous_status": current.status})
            changes.append(life_change(nik, village, current, decision.life, programs))
        if decision.dispute:
            disputed.add(nik)
    return LifePlan(tuple(rows), tuple(history), tuple(changes), frozenset(disputed), frozenset(recorded))
