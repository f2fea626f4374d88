"""Pure parts of program data and proposals (issue 17): a round's last day, the programs a
proposal asks for."""
from __future__ import annotations

import datetime as dt

import pytest

from services.registry.programs import round_end
from services.registry.proposals import MAX_REQUESTED, requested


@pytest.mark.parametrize(("period", "last"), [
    ("2026-11", dt.date(2026, 11, 30)), ("2026-12", dt.date(2026, 12, 31)), ("2028-02", dt.date(2028, 2, 29)),
    ("2026-01", dt.date(2026, 1, 31)), ("2026-H1", dt.date(2026, 6, 30)), ("2026-H2", dt.date(2026, 12, 31)),
])
def test_a_rounds_last_day(period, last):
    assert round_end(period) == last


def test_the_programs_a_proposal_asks_for():
    assert requested(["kamalia_merekah", "pkh"], None) == ["kamalia_merekah", "pkh"]
    # the older single field counts, once
    assert requested(["pkh"], "pkh") == ["pkh"]
    assert requested([], "kube") == ["kube"]
    # what cannot be a program code is dropped (it could never be enrolled or forwarded)
    assert requested(["PKH", "pkh; drop", "", "p", "bpnt"], None) == ["bpnt"]
    assert len(requested([f"prog_{i}" for i in range(50)], None)) == MAX_REQUESTED
