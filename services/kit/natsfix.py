"""A fix for FastStream's pull consumers that stall for `ack_wait` (30 s) now and then.

nats-py 2.16's `PullSubscription.fetch` usually signals "no more messages" with
`nats.errors.TimeoutError`, but one path (`_fetch_n` when its deadline has passed) raises the
builtin `TimeoutError`. FastStream 0.7.8's batch pull loop (`_consume_pull`) catches only the
nats one: the builtin escapes, the loop restarts, and the batch it had already fetched is
dropped unacked, so JetStream redelivers it only after `ack_wait`. Measured here: about one
run in four of the vertical slice hit a 30 s stall. Nothing is lost, but it is slow and made
tests flaky.

`apply()` wraps `fetch` so every timeout is the nats one, which both nats-py's callers and
FastStream expect (it subclasses the builtin, so `except TimeoutError` still works).
Applied when `services.kit.streams` is imported, once per process.
"""
from __future__ import annotations

import functools

from nats import errors as nats_errors
from nats.js.client import JetStreamContext

_MARK = "_sinergi_timeout_fix"


def apply() -> None:
    cls = JetStreamContext.PullSubscription
    if getattr(cls.fetch, _MARK, False):
        return
    original = cls.fetch

    @functools.wraps(original)
    async def fetch(self, *args, **kwargs):
        try:
            return await original(self, *args, **kwargs)
        except nats_errors.TimeoutError:
            raise
        except TimeoutError as exc:  # the builtin one: report it the way callers expect
            raise nats_errors.TimeoutError() from exc

    setattr(fetch, _MARK, True)
    cls.fetch = fetch
