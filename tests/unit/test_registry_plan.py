"""The ingest plan (domain.plan_ingest) without a database: which enrolment wins, who is new,
what a disagreement may not change, and that the same input always gives the same plan."""
from __future__ import annotations

import datetime as dt
import random

from hypothesis import given, settings, strategies as st

from contracts.agency import EnrolmentReport
from services.registry import domain, names
from services.registry.domain import Batch, CheckedReport, Enrolment, Person, plan_ingest

V = "3317012001"
NIKS = ["3317014107600001", "3317014107600002", "3317010305550003"]
PROGRAMS = ["pkh", "bpnt", "kis"]
KKS = ["3317010107100001", "3317010107100002"]
NAMES = ["Siti Aminah", "Sitti Aminah", "Sumarni", "Moch. Soeharto"]  # the first two are one name
BIRTHS = [dt.date(1960, 7, 1), dt.date(1961, 7, 1)]
DATES = [dt.date(2026, 1, 1) + dt.timedelta(days=d) for d in (0, 30, 60)]
STATUSES = ["active", "suspended", "exited", "deceased"]


def checked(mid: str, nik: str, program: str, *, status: str = "active", date: dt.date = DATES[0],
            name: str = "Siti Aminah", birth: dt.date = BIRTHS[0], no_kk: str = KKS[0], address: str = "RT 01",
            head: bool = False) -> CheckedReport:
    rep = EnrolmentReport.model_construct(
        message_id=mid, reference_id=f"ref-{mid}", programme_identifier=program, nik=nik, no_kk=no_kk, name=name,
        sex="F", birth_date=birth.isoformat(), village_code=V, address=address, enrolment_status=status,
        status_change_date=date.isoformat(), is_head_of_household=head)
    return CheckedReport(rep, program, birth, date, V)


def person(nik: str, *, name: str = "Siti Aminah", birth: dt.date = BIRTHS[0], by: str = "pkh",
           verification: str | None = None) -> Person:
    return Person(nik, KKS[0], name, "F", birth, V, "RT 01", names.normalise(name), by, verification,
                  "2026-11" if verification else None)


@st.composite
def batches(draw):
    """A batch of accepted reports (unique message ids) on a few people in a few programs, and the
    registry as the batch finds it: people new (created by the insert), existing, or vanished."""
    n = draw(st.integers(1, 12))
    mids = draw(st.lists(st.text("abcXYZ-09", min_size=1, max_size=4), min_size=n, max_size=n, unique=True))
    reports = [checked(mid, draw(st.sampled_from(NIKS)), draw(st.sampled_from(PROGRAMS)),
                       status=draw(st.sampled_from(STATUSES)), date=draw(st.sampled_from(DATES)),
                       name=draw(st.sampled_from(NAMES)), birth=draw(st.sampled_from(BIRTHS)),
                       no_kk=draw(st.sampled_from(KKS)), address=draw(st.sampled_from(["RT 01", "RT 02"])),
                       head=draw(st.booleans())) for mid in mids]
    people: dict[str, Person] = {}
    created: set[str] = set()
    for nik in sorted({r.nik for r in reports}):
        fate = draw(st.sampled_from(["new", "existing", "vanished"]))
        if fate == "new":
            created.add(nik)
        elif fate == "existing":
            people[nik] = person(nik, name=draw(st.sampled_from(NAMES)), birth=draw(st.sampled_from(BIRTHS)),
                                 by=draw(st.sampled_from(["", *PROGRAMS])),
                                 verification=draw(st.sampled_from([None, "verified"])))
    enrolments = {(nik, p): Enrolment(draw(st.sampled_from(STATUSES)), draw(st.sampled_from(DATES)),
                                      draw(st.sampled_from(["", "a", "m"])))
                  for nik in sorted({r.nik for r in reports} - created) for p in PROGRAMS if draw(st.booleans())}
    return reports, people, enrolments, created, draw(st.booleans())


def plan_of(reports, people, enrolments, created, trigram_table=False) -> domain.IngestPlan:
    return plan_ingest(Batch.of(reports), people, enrolments, created, trigram_table=trigram_table)


@given(batches())
def test_at_most_one_enrolment_change_per_person_and_program(case):
    plan = plan_of(*case)
    keys = [(e["nik"], e["programme_identifier"]) for e in plan.enrolments]
    assert len(keys) == len(set(keys))
    assert keys == [(c["nik"], c["programme_identifier"]) for c in plan.changes]
    assert [(e["enrolment_status"], e["status_change_date"].isoformat()) for e in plan.enrolments] == [
        (c["enrolment_status"], c["status_change_date"]) for c in plan.changes]


@given(batches())
def test_the_winner_is_the_latest_effective_report_and_only_if_it_supersedes_the_registry(case):
    reports, _people, enrolments, _created, _t = case
    plan = plan_of(*case)
    written = {(e["nik"], e["programme_identifier"]): e for e in plan.enrolments}
    for key in {r.key for r in reports}:
        best = max((r for r in reports if r.key == key), key=lambda r: r.order)
        cur = enrolments.get(key)
        newer = cur is None or best.order > (cur.status_change_date, cur.message_id)
        assert (key in written) == newer, key
        if newer:
            e = written[key]
            assert (e["status_change_date"], e["message_id"]) == best.order
            assert e["enrolment_status"] == best.report.enrolment_status
    change = {(c["nik"], c["programme_identifier"]): c for c in plan.changes}
    for key, c in change.items():
        assert c["previous_status"] == (enrolments[key].enrolment_status if key in enrolments else None)


@given(batches())
def test_a_person_new_to_the_registry_is_announced_new_once_and_others_never(case):
    reports, people, _enrolments, created, _t = case
    plan = plan_of(*case)
    announced = [p["nik"] for p in plan.registered]
    assert len(announced) == len(set(announced))
    assert {p["nik"] for p in plan.registered if p["is_new"]} == created
    assert not created & {p["nik"] for p in plan.people}  # the insert wrote them already
    for p in plan.registered:
        assert p["is_new"] == (p["nik"] in created)


@given(batches())
def test_a_disagreeing_program_never_changes_the_name_or_birth_date(case):
    reports, people, _enrolments, _created, _t = case
    plan = plan_of(*case)
    rows = {p["nik"]: p for p in plan.people}
    for nik, old in people.items():
        setter_reported = any(r.nik == nik and r.program == old.reported_by for r in reports)
        if old.reported_by and not setter_reported and nik in rows:
            row = rows[nik]
            assert (row["name"], row["birth_date"], row["reported_by"]) == (old.name, old.birth_date, old.reported_by)
    for c in plan.conflicts:
        if c["kind"] in ("name_mismatch", "birth_date_mismatch"):
            assert len(c["programme_identifiers"]) == 2


@given(batches())
def test_the_plan_is_deterministic(case):
    reports, people, enrolments, created, trigram = case
    one = plan_of(reports, people, enrolments, created, trigram)
    assert one == plan_of(list(reports), dict(people), dict(enrolments), set(created), trigram)
    assert len(one.enrolment_history) == len(reports)
    assert [h["message_id"] for h in one.enrolment_history] == [r.report.message_id for r in reports]
    assert bool(one.name_trigrams) <= trigram


@settings(max_examples=50)
@given(batches(), st.randoms(use_true_random=False))
def test_arrival_order_within_a_batch_does_not_change_the_outcome(case, rnd: random.Random):
    reports, people, enrolments, created, trigram = case
    shuffled = list(reports)
    rnd.shuffle(shuffled)
    a, b = plan_of(*case), plan_of(shuffled, people, enrolments, created, trigram)

    def rows(xs, *key):
        return sorted(repr(sorted(x.items())) for x in xs)
    for field in ("people", "person_history", "enrolments", "changes", "registered", "conflicts"):
        assert rows(getattr(a, field)) == rows(getattr(b, field)), field


def test_death_in_one_program_while_another_pays_is_a_conflict():
    nik = NIKS[0]
    plan = plan_of([checked("d1", nik, "pkh", status="deceased", date=DATES[1])], {nik: person(nik)},
                   {(nik, "bpnt"): Enrolment("active", DATES[0], "x")}, set())
    [c] = plan.conflicts
    assert c["kind"] == "death_while_active" and c["programme_identifiers"] == ["bpnt", "pkh"]
    assert c["details"] == {"deceased_in": ["pkh"], "active_in": ["bpnt"]} and "id" not in c


def test_another_program_may_move_the_household_but_not_rename():
    nik = NIKS[0]
    old = person(nik, name="Siti Aminah", by="pkh", verification="verified")
    plan = plan_of([checked("b1", nik, "bpnt", name="Sitti Aminah", no_kk=KKS[1], address="RT 09", head=True)],
                   {nik: old}, {}, set(), trigram_table=True)
    [row] = plan.people
    assert (row["name"], row["no_kk"], row["address"], row["reported_by"]) == ("Siti Aminah", KKS[1], "RT 09", "pkh")
    assert plan.households == ({"no_kk": KKS[1], "village_code": V, "head_nik": nik},)
    assert plan.name_trigrams == ()  # name and village unchanged: the trigram rows stay
    assert plan.changes[0]["verification_status"] == "verified" and not plan.conflicts
    renamed = plan_of([checked("b2", nik, "bpnt", name="Sumarni")], {nik: old}, {}, set())
    assert renamed.people == () and renamed.registered == ()
    assert [c["kind"] for c in renamed.conflicts] == ["name_mismatch"]
    assert len(renamed.enrolments) == 1  # the report still counts for its own enrolment


def test_new_people_are_inserted_with_the_identity_the_plan_announces():
    nik = NIKS[1]
    batch = Batch.of([checked("z", nik, "pkh", date=DATES[1], name="Sumarni"), checked("a", nik, "pkh")])
    [row] = batch.new_people()
    assert row["nik"] == nik and row["name"] == "Sumarni" and row["name_key"] == names.normalise("Sumarni")
    plan = plan_ingest(batch, {}, {}, {nik}, trigram_table=True)
    assert [p["name"] for p in plan.registered] == ["Sumarni"] and plan.registered[0]["is_new"]
    assert [h["message_id"] for h in plan.person_history] == ["a", "z"]  # effective order
    assert plan.name_trigrams[0][:2] == (nik, V)
