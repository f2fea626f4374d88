"""Indonesian name normalisation for tolerant search."""
from __future__ import annotations

import pytest

from services.registry import domain, names


@pytest.mark.parametrize("a,b", [
    ("Mochammad Soeharto", "Muhamad Suharto"),        # Moch/Muh, oe -> u, double letters
    ("Moh. Soerjo", "Muhammad Suryo"),                 # old j for y
    ("Djoko Tjahjono", "Joko Cahyono"),                # dj -> j, tj -> c
    ("Njoman", "Nyoman"), ("Chairul", "Khairul"), ("Sjahrir", "Syahrir"),
    ("SITI  AMINAH", "siti aminah"), ("Sitti Aminah", "Siti Aminah"),
    ("Abd. Rachman", "Abdul Rachman"),
    ("Ngatiyem", "Ngatijem"), ("Sri Rahayoe", "Sri Rahayu"),
])
def test_spelling_variants_share_one_key(a, b):
    assert names.normalise(a) == names.normalise(b)


def test_different_names_stay_different():
    assert names.normalise("Siti Aminah") != names.normalise("Siti Aisyah")
    assert names.similarity(names.normalise("Siti Aminah"), names.normalise("Budi Santoso")) < 0.1


def test_key_drops_accents_and_punctuation():
    assert names.normalise("  Ni'mah, S.Pd. ") == "nimah s pd"
    assert names.normalise("Dédé Rosé") == "dede rose"
    assert names.normalise("123 !!") == ""


def test_trigrams_and_similarity_match_pg_trgm():
    assert names.trigrams("siti") == {"  s", " si", "sit", "iti", "ti "}
    assert names.similarity("siti", "siti") == 1.0
    assert names.similarity("", "siti") == 0.0
    # measured on PostgreSQL 15: select similarity('siti aminah', 'siti aminah karto') = 0.6666667
    assert round(names.similarity("siti aminah", "siti aminah karto"), 4) == 0.6667


def _report(name: str, program: str, birth: str = "1960-07-01"):
    import datetime as dt
    import json

    from tests import factories
    v = "3317012001"
    rep = {"message_id": "m", "programme_identifier": program, "nik": factories.nik(v, dt.date(1960, 7, 1), "F", 1),
           "no_kk": "3317010107100001", "name": name, "sex": "F", "birth_date": birth, "village_code": v,
           "enrolment_status": "active", "status_change_date": "2026-01-01"}
    return domain.check_report(json.dumps(rep).encode(), program, today=dt.date(2026, 11, 23))[0]


def test_identity_conflicts_between_programs_only():
    import datetime as dt
    born = dt.date(1960, 7, 1)
    assert domain.identity_conflicts("Siti Aminah", born, "pkh", _report("Sitti Aminah", "bpnt")) == []
    assert domain.identity_conflicts("Siti Aminah", born, "pkh", _report("Sumarni", "bpnt")) == ["name_mismatch"]
    assert domain.identity_conflicts("Siti Aminah", born, "pkh", _report("Sumarni", "pkh")) == []  # own correction
    assert domain.identity_conflicts("Siti Aminah", born, "", _report("Sumarni", "pkh")) == []
    other_century = dt.date(2060, 7, 1)
    assert domain.identity_conflicts("Siti Aminah", other_century, "pkh",
                                     _report("Siti Aminah", "bpnt")) == ["birth_date_mismatch"]


def test_fingerprint_is_order_independent():
    assert domain.fingerprint("name_mismatch", "pkh=A", "bpnt=B") == domain.fingerprint("name_mismatch", "bpnt=B", "pkh=A")
    assert domain.fingerprint("name_mismatch", "pkh=A", "bpnt=B") != domain.fingerprint("name_mismatch", "pkh=A", "bpnt=C")


def test_round_period_follows_the_cadence():
    import datetime as dt
    assert domain.round_period(dt.date(2026, 11, 23), "monthly") == "2026-11"
    assert domain.round_period(dt.date(2026, 6, 30), "semiannual") == "2026-H1"
    assert domain.round_period(dt.date(2026, 7, 1), "semiannual") == "2026-H2"
    with pytest.raises(ValueError):
        domain.round_period(dt.date(2026, 7, 1), "weekly")
