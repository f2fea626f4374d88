"""Life status rules (issue 17), without I/O: domain.decide_life and the ingest plan's life part."""
from __future__ import annotations

import datetime as dt
import json

from hypothesis import given
from hypothesis import strategies as st

from services.registry import domain
from tests import factories

D = dt.date(2026, 4, 1)
STATUSES = ["alive", "deceased", "moved_out", "ineligible", "disputed"]
SOURCES = ["agency", "verifier", "crvs"]


def fact(status: str, source: str = "agency", day: dt.date = D, by: str = "pkh", code: str = "x") -> domain.LifeFact:
    return domain.LifeFact(status, source, day, by, code)


def life(status: str, source: str, day: dt.date = D, by: str = "pkh") -> domain.Life:
    return domain.Life(status, source, day, by, "x")


lives = st.one_of(st.just(domain.ALIVE), st.builds(life, st.sampled_from(STATUSES), st.sampled_from(SOURCES),
                                                   st.dates(dt.date(2025, 1, 1), dt.date(2027, 1, 1))))
facts = st.builds(fact, st.sampled_from(STATUSES), st.sampled_from(SOURCES),
                  st.dates(dt.date(2025, 1, 1), dt.date(2027, 1, 1)))


@given(lives, facts)
def test_a_change_is_announced_exactly_when_the_status_changes(current, f):
    d = domain.decide_life(current, f)
    assert d.announce == (d.life.status != current.status)
    assert not d.dispute or (d.life.status == "disputed" and d.announce)


@given(lives, facts)
def test_the_same_fact_twice_changes_nothing_the_second_time(current, f):
    once = domain.decide_life(current, f).life
    twice = domain.decide_life(once, f)
    assert twice.life == once and not twice.announce


@given(facts.filter(lambda f: f.source != "crvs"))
def test_nothing_overturns_a_death_dukcapil_recorded(f):
    dead = life("deceased", "crvs", by="dukcapil")
    assert domain.decide_life(dead, f).life.status == "deceased"


@given(lives, st.dates(dt.date(2025, 1, 1), dt.date(2027, 1, 1)))
def test_dukcapil_always_wins(current, day):
    d = domain.decide_life(current, fact("deceased", "crvs", day, "dukcapil"))
    assert d.life.status == "deceased" and d.life.source == "crvs"


def test_a_second_programs_death_announces_nothing():
    first = domain.decide_life(domain.ALIVE, fact("deceased", by="pkh"))
    assert first.announce and first.life.status == "deceased"
    second = domain.decide_life(first.life, fact("deceased", by="kamalia"))
    assert not second.announce and second.life == first.life


def test_deceased_in_one_program_and_active_in_another_is_disputed_either_way():
    dead = domain.decide_life(domain.ALIVE, fact("deceased")).life
    d = domain.decide_life(dead, fact("disputed"))
    assert d.announce and d.dispute and d.life.status == "disputed"
    d = domain.decide_life(domain.ALIVE, fact("disputed"))
    assert d.announce and d.dispute


def test_a_dispute_waits_for_a_verifier_and_the_verifier_decides():
    disputed = life("disputed", "agency")
    assert not domain.decide_life(disputed, fact("alive")).announce  # a program cannot lift it
    d = domain.decide_life(disputed, fact("alive", "verifier", by="verivali", code="verifier.confirmed_alive"))
    assert d.announce and d.life.status == "alive" and d.life.source == "verifier"
    # later agency reports of the old disagreement do not reopen it
    assert domain.decide_life(d.life, fact("disputed", day=D)).life.status == "alive"


def test_a_death_after_a_verifier_confirmed_alive_is_a_new_fact():
    confirmed = life("alive", "verifier", D)
    assert domain.decide_life(confirmed, fact("deceased", day=D - dt.timedelta(days=1))).life == confirmed
    later = domain.decide_life(confirmed, fact("deceased", day=D + dt.timedelta(days=30)))
    assert later.announce and later.life.status == "deceased"


def test_dukcapil_confirming_a_programs_death_takes_the_record_over_silently():
    dead = life("deceased", "agency")
    d = domain.decide_life(dead, fact("deceased", "crvs", by="dukcapil"))
    assert not d.announce and d.life.source == "crvs"
    # so a program's later `active` cannot dispute it
    assert domain.decide_life(d.life, fact("disputed")).life == d.life


def test_verivali_results_become_life_status():
    for status in ("deceased", "moved_out", "ineligible"):
        d = domain.decide_life(domain.ALIVE, fact(status, "verifier", by="verivali"))
        assert d.announce and d.life.status == status
    found = domain.decide_life(life("ineligible", "verifier"), fact("alive", "verifier", by="verivali"))
    assert found.announce and found.life.status == "alive"


# ---- in the ingest plan ----

def _checked(rep: dict) -> domain.CheckedReport:
    checked, _raw, problems = domain.check_report(json.dumps(rep).encode(), rep["programme_identifier"])
    assert checked is not None, problems
    return checked


def _plan(reports, enrolments=None, lives=None, created=frozenset()):
    batch = domain.Batch.of([_checked(r) for r in reports])
    return domain.plan_ingest(batch, {}, enrolments or {}, set(created) or batch.niks, lives=lives or {})


def test_an_agency_death_is_announced_with_the_persons_enrolments():
    rep = factories.enrolment("pkh", status="deceased", effective="2026-03-05")
    kamalia = domain.Enrolment("exited", dt.date(2026, 1, 1), "m-0")
    plan = _plan([rep], {(rep["nik"], "kamalia"): kamalia})
    [change] = plan.life.changes
    assert change["life_status"] == "deceased" and change["previous_status"] == "alive"
    assert change["source"] == "agency" and change["reported_by"] == "pkh"
    assert change["effective_date"] == "2026-03-05" and change["programme_identifiers"] == ["kamalia", "pkh"]
    assert change["reason_code"] == "agency.deceased"


def test_deceased_and_active_in_one_batch_is_one_dispute_and_one_conflict():
    dead = factories.enrolment("pkh", status="deceased", effective="2026-03-05")
    alive = {**dead, "message_id": "k-1", "programme_identifiers": "kamalia", "programme_identifier": "kamalia",
             "enrolment_status": "active"}
    plan = _plan([dead, alive])
    assert [c["life_status"] for c in plan.life.changes] == ["disputed"]
    assert plan.life.disputed == {dead["nik"]}
    assert [c["kind"] for c in plan.conflicts] == ["death_while_active"]


def test_an_active_report_about_a_person_dukcapil_recorded_deceased_is_noted_not_disputed():
    rep = factories.enrolment("pkh", effective="2026-03-05")
    dead = {(rep["nik"], "kamalia"): domain.Enrolment("deceased", dt.date(2026, 2, 1), "m-0")}
    crvs = {rep["nik"]: domain.Life("deceased", "crvs", dt.date(2026, 2, 1), "dukcapil", "crvs.death_notification")}
    plan = _plan([rep], dead, crvs, created={"other"})
    assert plan.life.changes == () and plan.conflicts == ()
    assert plan.life.recorded_deceased == {("pkh", rep["message_id"])}


def test_a_person_new_to_programs_whom_dukcapil_recorded_is_announced_when_enrolled():
    rep = factories.enrolment("pkh")
    crvs = {rep["nik"]: domain.Life("deceased", "crvs", dt.date(2026, 2, 1), "dukcapil", "crvs.death_notification")}
    plan = _plan([rep], lives=crvs)
    [change] = plan.life.changes
    assert change["life_status"] == "deceased" and change["source"] == "crvs" and change["reported_by"] == "dukcapil"


# ---- Dukcapil's notifications: whatever the bytes, an answer (never an exception) ----

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                 max_size=4), max_leaves=20)


def _answer(data: bytes) -> None:
    from services.registry import dukcapil
    note, ids, problems = dukcapil.check_notification(data, None, D)
    assert (note is None) == bool(problems)
    assert all(p.code and p.message for p in problems)
    for ev in note.message.notify_event if note else []:
        death, bad = dukcapil.check_event(ev, D)
        assert (death is None) == bool(bad)


@given(st.binary(max_size=300))
def test_any_bytes_get_a_reason_or_a_notification(data):
    _answer(data)


@given(_json)
def test_any_json_gets_a_reason_or_a_notification(doc):
    _answer(json.dumps(doc).encode())


@given(st.dictionaries(st.sampled_from(["reference_id", "data", "timestamp"]), _json, max_size=3),
       st.sampled_from(["notify", "search", ""]))
def test_any_event_in_a_real_envelope_gets_a_status(event, action):
    doc = {"header": {"message_id": "m-1", "action": action}, "message": {"transaction_id": "t", "notify_event": [
        event, {"reference_id": "ok", "data": {"reg_event_type": "DEATH", "reg_records": {
            "identifier": [{"identifier_type": "NIK", "identifier_value": "3317014107600001"}],
            "death_date": "2026-03-01", "registration_number": "A-1"}}}]}}
    _answer(json.dumps(doc).encode())
