"""The relay tells a stream without a leader (a cluster node restarting: try again) from a
subject no stream captures (the row's fault: set aside after a few rounds)."""
from __future__ import annotations

import nats.errors
import nats.js.errors

from contracts.subjects import Names
from services.kit.outbox import stream_away, subject_matches


def test_subject_matching_follows_nats():
    assert subject_matches("registry.events.enrolments_changed", "registry.events.>")
    assert subject_matches("channel.pos.instructions", "channel.*.instructions")
    assert not subject_matches("channel.pos.settlements", "channel.*.instructions")
    assert not subject_matches("registry.events", "registry.events.>")  # `>` needs one token
    assert not subject_matches("agency.pkh.enrolments.x", "agency.*.enrolments")
    assert subject_matches("deadletter.registry", "deadletter.>")


def test_no_responder_for_our_own_stream_is_waited_out_not_set_aside():
    names = Names("t1")
    captured = [names.subject("disbursement.>"), names.subject("channel.*.instructions")]
    away = nats.js.errors.NoStreamResponseError()
    assert stream_away(away, names.subject("disbursement.settlement_recorded"), captured)
    assert stream_away(away, names.subject("channel.pos.instructions"), captured)
    assert not stream_away(away, names.subject("nowhere.at.all"), captured)  # no stream: the row's fault
    assert not stream_away(nats.errors.TimeoutError(), names.subject("disbursement.x"), captured)
