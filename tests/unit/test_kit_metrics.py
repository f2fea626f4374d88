"""kit.metrics and the consumer's cheap counters, without servers."""
from __future__ import annotations

import pytest
from nats.aio.msg import Msg

from services.kit.consumer import MAX_SUBJECTS, ConsumerStats, _redelivered
from services.kit.metrics import _reason_code, route_template


def _msg(reply: str | None, subject: str = "agency.pkh.enrolments") -> Msg:
    return Msg(None, subject=subject, reply=reply, data=b"", headers=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("reply", [
    "$JS.ACK.AGENCY_ENROLMENTS.registry-enrolments-v1.{d}.12345.678.1700000000000000000.10",
    "$JS.ACK.hub.ACCOUNTHASH.REGISTRY.intake-registry-v2.{d}.5.5.1700000000000000000.0.x1y2",
])
@pytest.mark.parametrize("delivered", [1, 2, 17])
def test_redelivered_agrees_with_nats_py_metadata(reply, delivered):
    m = _msg(reply.format(d=delivered))
    assert _redelivered(m.reply) == (m.metadata.num_delivered > 1) == (delivered > 1)


def test_received_counts_subjects_and_redeliveries_and_caps_subjects():
    st = ConsumerStats()
    ack = "$JS.ACK.S.c.{d}.1.1.1700000000000000000.0"
    st.received([_msg(ack.format(d=1)), _msg(ack.format(d=2)), _msg(None)])
    assert st.by_subject == {"agency.pkh.enrolments": 3} and st.redelivered == 1
    st.received([_msg(ack.format(d=1), subject=f"agency.p{i}.enrolments") for i in range(MAX_SUBJECTS + 10)])
    assert len(st.by_subject) == MAX_SUBJECTS + 1 and st.by_subject["other"] == 11


def test_route_template_never_the_raw_path():
    class Route:
        path = "/people/{nik}"
    assert route_template({"route": Route(), "path": "/people/3317010101900001"}) == "/people/{nik}"
    assert route_template({"path": "/ui/static/app.css", "root_path": "/ui/static", "app_root_path": ""}) == \
        "/ui/static/{path}"
    assert route_template({"path": "/3317010101900001"}) == "(unmatched)"


def test_reason_code_of_a_dead_letter_row():
    assert _reason_code(b'{"reason_code": "rjct.nik.invalid"}') == "rjct.nik.invalid"
    assert _reason_code(b"not json") == "unknown"
    assert _reason_code(b'{"reason_code": "' + b"x" * 500 + b'"}') == "unknown"
