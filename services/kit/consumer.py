"""The one JetStream consumer every service uses.

    kit.consume(ConsumerSpec(durable="reporting-registry-v1", stream=..., subject=...,
                             decode=decode_registry_event, handle=apply_facts))

A loop on nats-py's pull API (FastStream is not used: docs/ARCHITECTURE.md says why):

1. **Fetch.** Idle, it waits for one message with a long poll (`idle_wait`), so an idle
   system costs a request every few seconds, not ten a second; busy, it fetches batches of
   up to `batch` with a short wait for a partial batch (`fetch_wait`).
2. **Decode.** `spec.decode(msg)` turns bytes into a contract value through kit/decode.py.
   Whatever the bytes are, no exception escapes: a `Rejection` keeps its reason code and any
   other exception becomes `rjct.message.invalid`. `None` means "not for this consumer":
   acknowledged, not handled.
3. **Handle, in one unit of work.** The kit claims the delivery keys in its inbox (unless the
   service keeps its own idempotency record), dead-letters the rejected deliveries (unless the
   handler answers them itself, as the registry does with receipts) and calls
   `spec.handle(uow, deliveries)` with the fresh, accepted ones. Commit, then ack.
4. **Failure.** A database or connection error (`transient`) naks the whole batch with a
   growing delay and dead-letters nothing (writing a dead letter needs the database too). Any
   other exception bisects the batch at once: halves that succeed are committed and acked; a
   single message that still fails is nak'ed with a delay until it has been delivered
   `max_deliveries` times, then dead-lettered (`rjct.handler.error`). One bad message among
   2,000 costs about 2 x log2(2,000) = 22 small transactions per delivery, not 2,000.

Health (`problem()`): the loop must be running, and messages must not wait while no batch
comes (`stall_after`). The loop checks that itself and re-subscribes; `/readyz` reports it.
"""
from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import nats.errors
import sqlalchemy.exc
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.kit import logging as klog
from services.kit.decode import Limits, Rejection, load_json
from services.kit.outbox import cancel_bounded, claim
from services.kit.uow import UnitOfWork

if TYPE_CHECKING:
    from services.kit.runtime import Kit

log = klog.get(__name__)
T = TypeVar("T")

HANDLER_ERROR = "rjct.handler.error"
MAX_SUBJECTS = 500
# SQLSTATE classes worth retrying: connection (08), transaction rollback: deadlock or
# serialization (40), insufficient resources (53), operator intervention: shutdown (57),
# lock not available (55P03). Everything else (22 data, 23 integrity, 42 syntax) repeats.
_TRANSIENT_SQLSTATE = ("08", "40", "53", "57", "55P03")


def transient(exc: BaseException) -> bool:
    """An error that says nothing about the message: the database or the network is away."""
    if isinstance(exc, (OSError, ConnectionError, asyncio.TimeoutError, TimeoutError,
                        sqlalchemy.exc.TimeoutError, nats.errors.Error)):
        return True
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        if exc.connection_invalidated or isinstance(exc, sqlalchemy.exc.InterfaceError):
            return True
        exc = exc.orig if exc.orig is not None else exc
    # asyncpg's errors carry the SQLSTATE; SQLAlchemy's adapter wraps them (orig, then cause)
    for e in (exc, exc.__cause__):
        state = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
        if isinstance(state, str):
            return state.startswith(_TRANSIENT_SQLSTATE)
    return False


@dataclass(slots=True)
class Delivery(Generic[T]):
    """One message as the handler sees it."""

    msg: Msg
    key: str                          # idempotency key (Nats-Msg-Id, else the stream sequence)
    value: T | None = None
    rejection: Rejection | None = None

    @property
    def subject(self) -> str:
        return self.msg.subject

    @property
    def data(self) -> bytes:
        return self.msg.data

    @property
    def deliveries(self) -> int:
        return self.msg.metadata.num_delivered or 1

    @property
    def stream_seq(self) -> int:
        return self.msg.metadata.sequence.stream

    def where(self) -> dict[str, Any]:
        """Where the original lies (for a dead letter)."""
        return {"stream": self.msg.metadata.stream, "stream_seq": self.stream_seq, "deliveries": self.deliveries}


def default_key(msg: Msg) -> str:
    return (msg.headers or {}).get("Nats-Msg-Id") or f"seq-{msg.metadata.sequence.stream}"


MAX_KEY = 200  # characters: a btree entry holds at most 2,704 bytes


def storable_key(key: str) -> str:
    """A key the inbox can hold: a longer one, or one PostgreSQL cannot store as text (NUL, a
    lone surrogate), is kept as its digest. A 5,000-character Nats-Msg-Id otherwise failed the
    inbox insert on every delivery, and the message was nak'ed forever."""
    if len(key) <= MAX_KEY and "\x00" not in key and key.isprintable():
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


# `{"event_id": "<uuid>"` opens every envelope (pydantic and the registry's bulk writer both
# put it first), so the key is read without parsing the whole message twice
_LEADING_EVENT_ID = re.compile(rb'\A\s*\{\s*"event_id"\s*:\s*"([0-9A-Fa-f-]{32,36})"')


def envelope_key(msg: Msg) -> str:
    """The idempotency key of an event: its envelope's `event_id`.

    The outbox publishes every event with `Nats-Msg-Id` = `event_id`, so for a producer's own
    publishes (and the relay's re-publishes after a crash) this equals `default_key`. A copy
    re-published by anything else (a replay, an operator's tool) outside JetStream's
    de-duplication window may carry another `Nats-Msg-Id`, but still its `event_id`: keyed by
    that, the inbox drops it. Bytes without a readable event_id fall back to `default_key`
    (and the decoder rejects them)."""
    head = _LEADING_EVENT_ID.match(msg.data)
    raw: Any = head.group(1).decode() if head else None
    if raw is None:
        try:
            doc = load_json(msg.data, Limits())
        except Rejection:
            return default_key(msg)
        raw = doc.get("event_id") if isinstance(doc, dict) else None
    try:
        return str(uuid.UUID(raw)) if isinstance(raw, str) else default_key(msg)
    except ValueError:
        return default_key(msg)


Decode = Callable[[Msg], Any]
Handle = Callable[[UnitOfWork, list[Delivery[Any]]], Awaitable[None]]


@dataclass(frozen=True)
class ConsumerSpec:
    durable: str
    stream: str                       # full names (through `Names`)
    subject: str
    decode: Decode
    handle: Handle
    batch: int = 500
    fetch_wait: float = 0.1           # how long a partial batch waits for more
    idle_wait: float = 2.0            # long poll for the first message after an idle spell
    ack_wait: float = 60.0            # seconds before an unacknowledged batch is redelivered
    max_deliveries: int = 3           # a message failing the handler this often is dead-lettered
    inbox: bool = True                # claim keys in the kit inbox (False: the service keeps its own)
    handles_rejections: bool = False  # True: rejected deliveries go to the handler (receipts)
    key: Callable[[Msg], str] = default_key
    # the inbox's consumer name (default: the durable): a durable renamed to change its config
    # keeps the old name here, so what the old one applied counts as seen
    inbox_name: str | None = None
    backoff: tuple[float, ...] = (0.5, 1, 2, 5, 10, 30)
    stall_after: float = 30.0         # messages pending and no batch this long: stalled


@dataclass
class ConsumerStats:
    handled: int = 0
    rejected: int = 0
    duplicates: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    retried: int = 0
    batches: int = 0
    failures: int = 0
    resubscribed: int = 0
    redelivered: int = 0              # messages that arrived a second or later time
    by_code: dict[str, int] = field(default_factory=dict)
    by_subject: dict[str, int] = field(default_factory=dict)  # messages received (kit.metrics)

    def received(self, msgs: list[Msg]) -> None:
        """Count a fetched batch: per subject (at most `MAX_SUBJECTS` kept; a hostile
        publisher cannot grow this without bound) and redeliveries."""
        by = self.by_subject
        for m in msgs:
            s = m.subject if (m.subject in by or len(by) < MAX_SUBJECTS) else "other"
            by[s] = by.get(s, 0) + 1
            if _redelivered(m.reply):
                self.redelivered += 1


def _redelivered(reply: str | None) -> bool:
    """Delivered before? Read from the ack subject's delivery count, without nats-py's full
    metadata parse (15 us a message, 30 ms a batch of 2,000; this is 30 times cheaper):
    `$JS.ACK.<stream>.<consumer>.<delivered>.<...>` (9 tokens) or, with a domain and account
    hash, `$JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<...>` (12)."""
    if not reply:
        return False
    t = reply.split(".")
    n = len(t)
    return (t[4] if n == 9 else t[6] if n >= 11 else "1") != "1"


class Consumer:
    def __init__(self, kit: Kit, spec: ConsumerSpec) -> None:
        self.kit, self.spec = kit, spec
        self.stats = ConsumerStats()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._psub: Any = None
        self._generation = -1
        self.last_batch_at = time.monotonic()
        self.last_check_at = time.monotonic()
        self.pending = 0                  # messages waiting on the server, as last asked
        self.stalled: str | None = None
        self.last_error: str | None = None

    @property
    def ack_wait(self) -> float:
        """The spec's, unless the settings shorten it for every consumer (crash tests)."""
        return self.kit.settings.consumer_ack_wait or self.spec.ack_wait

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Create (or find) the durable consumer, then run the loop: a permission or config
        error shows at start-up, not later in a log."""
        await self._subscription()
        await self._reconcile()
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self.spec.durable}")

    async def _reconcile(self) -> None:
        """nats-py binds an existing durable without comparing its config, so a deployment
        made before a change keeps the old ack_wait and max_ack_pending. Those two may be
        edited in place: do it, or say that it could not be done."""
        js, s = self.kit.bus.js, self.spec
        try:
            info = await js.consumer_info(s.stream, s.durable)
        except Exception as exc:  # e.g. a leader election in a cluster: never a reason not to start
            log.warning("consumer.config_unchecked", durable=s.durable, error=str(exc)[:200])
            return
        want = {"ack_wait": self.ack_wait, "max_ack_pending": max(s.batch * 4, 1000)}
        have = {"ack_wait": info.config.ack_wait, "max_ack_pending": info.config.max_ack_pending}
        if all(abs((have[k] or 0) - v) < 1e-3 for k, v in want.items()):
            return
        cfg = info.config
        cfg.ack_wait, cfg.max_ack_pending = want["ack_wait"], want["max_ack_pending"]
        try:
            await js.add_consumer(s.stream, config=cfg)  # an update of a durable's editable fields
            log.info("consumer.config_updated", durable=s.durable, was=have, now=want)
        except Exception as exc:
            log.warning("consumer.config_differs", durable=s.durable, have=have, want=want, error=str(exc)[:200])

    async def stop(self) -> None:
        # stop fetching before the connection drains (a pending pull would hold the drain)
        self._stopping = True
        if self._task and not await cancel_bounded(self._task):
            log.warning("consumer.stop_timeout", durable=self.spec.durable)
        await self._unsubscribe()

    def problem(self) -> str | None:
        """None while healthy; else what is wrong, for `/readyz`."""
        if self._task is None:
            return "not started"
        if self._task.done():
            exc = None if self._task.cancelled() else self._task.exception()
            return f"not running: {exc!r}"
        return self.stalled

    async def check(self, timeout: float = 2.0) -> str | None:
        """Ask the server how many messages wait; stalled if some do and no batch came for
        `stall_after` seconds. Also what the loop runs by itself every few seconds."""
        problem = self.problem()
        if problem and not self.stalled:
            return problem
        info = await self.kit.bus.js.consumer_info(self.spec.stream, self.spec.durable, timeout=timeout)
        self.pending = int(info.num_pending or 0)
        self.last_check_at = time.monotonic()
        idle = time.monotonic() - self.last_batch_at
        if self.pending and idle > self.spec.stall_after:
            self.stalled = f"stalled: {self.pending} messages waiting, no batch for {idle:.0f} s"
        else:
            self.stalled = None
        return self.stalled

    # -- the loop --------------------------------------------------------------------------

    async def _subscription(self) -> Any:
        bus = self.kit.bus
        if self._psub is None or self._generation != bus.generation:
            s = self.spec
            cfg = ConsumerConfig(durable_name=s.durable, ack_policy=AckPolicy.EXPLICIT,
                                 deliver_policy=DeliverPolicy.ALL, ack_wait=self.ack_wait,
                                 max_ack_pending=max(s.batch * 4, 1000), filter_subject=s.subject)
            self._psub = await bus.js.pull_subscribe(s.subject, durable=s.durable, stream=s.stream, config=cfg,
                                                     pending_msgs_limit=s.batch * 8)
            self._generation = bus.generation
        return self._psub

    async def _unsubscribe(self) -> None:
        psub, self._psub = self._psub, None
        if psub is not None:
            try:
                await psub.unsubscribe()
            except Exception as exc:  # a replaced connection is already closed
                log.debug("consumer.unsubscribe_failed", error=str(exc)[:200])

    async def _run(self) -> None:
        """Fetch the next batch while the current one is in its transaction: the two overlap
        (reporting's drain: the process's CPU and PostgreSQL's plus nats-server's added up to
        the wall time when they ran one after another). Batches are still handled one at a
        time and in order, and each is acknowledged only after its commit."""
        busy = False
        inflight: asyncio.Task[None] | None = None
        try:
            while not self._stopping:
                try:
                    psub = await self._subscription()
                    msgs = await (psub.fetch(self.spec.batch, timeout=self.spec.fetch_wait) if busy
                                  else psub.fetch(1, timeout=self.spec.idle_wait))
                except (nats.errors.TimeoutError, TimeoutError):
                    busy = False
                    await self._finished(inflight)
                    inflight = None
                    await self._self_check()
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # connection trouble: nats-py reconnects; try again shortly
                    if self._stopping:
                        return
                    self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                    log.warning("consumer.fetch_failed", durable=self.spec.durable, error=self.last_error)
                    await self._finished(inflight)
                    inflight = None
                    await asyncio.sleep(1.0)
                    await self._self_check()
                    continue
                if not msgs:
                    continue
                busy = True
                self.last_batch_at = time.monotonic()
                self.stalled = None
                # decoded now, while the previous batch's statements run in PostgreSQL
                batch = self.decode_all(msgs)
                await self._finished(inflight)
                inflight = asyncio.create_task(self._process_safely(msgs, batch), name=f"batch-{self.spec.durable}")
        finally:
            if inflight is not None and not inflight.done():
                inflight.cancel()  # not acked: the server redelivers after ack_wait
                await asyncio.wait({inflight}, timeout=10)

    @staticmethod
    async def _finished(task: asyncio.Task[None] | None) -> None:
        if task is not None:
            await task

    async def _process_safely(self, msgs: list[Msg], batch: list[Delivery[Any]]) -> None:
        try:
            await self.process(msgs, batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # must not happen (process catches); never kill the loop
            if self._stopping:
                return
            log.error("consumer.process_failed", durable=self.spec.durable, error=repr(exc)[:500])
            await self._settle(msgs, ack=False)

    async def _self_check(self) -> None:
        """Every few seconds: are messages waiting that we do not get? Then re-subscribe."""
        if time.monotonic() - self.last_check_at < min(10.0, self.spec.stall_after / 3):
            return
        try:
            if await self.check():
                log.error("consumer.stalled", durable=self.spec.durable, pending=self.pending,
                          action="re-subscribing")
                self.stats.resubscribed += 1
                await self._unsubscribe()
                self.last_batch_at = time.monotonic()  # give the new subscription its chance
        except Exception as exc:
            self.last_check_at = time.monotonic()
            log.warning("consumer.check_failed", durable=self.spec.durable, error=str(exc)[:200])

    # -- one batch -------------------------------------------------------------------------

    def decode(self, msg: Msg) -> Delivery[Any]:
        spec = self.spec
        try:
            key = storable_key(spec.key(msg))
        except Exception:
            key = f"seq-{msg.metadata.sequence.stream}"
        d: Delivery[Any] = Delivery(msg, key)
        try:
            d.value = spec.decode(msg)
        except Rejection as rej:
            d.rejection = rej
        except Exception as exc:  # a decoder that raised something else: still a clear answer
            d.rejection = Rejection("rjct.message.invalid", f"{type(exc).__name__}: {exc}"[:500])
        return d

    def decode_all(self, msgs: list[Msg]) -> list[Delivery[Any]]:
        return [self.decode(m) for m in msgs]

    async def process(self, msgs: list[Msg], batch: list[Delivery[Any]] | None = None) -> None:
        """Decode (unless done already), handle (bisecting on failure), ack. Never raises for a
        bad message."""
        self.stats.batches += 1
        self.stats.received(msgs)
        if batch is None:
            batch = self.decode_all(msgs)
        # one span per batch, child of the first message's trace (kit.tracing; nothing when off)
        with self.kit.tracing.batch(self.spec.durable, self.spec.subject, msgs):
            await self._handle(batch, time.monotonic())

    async def _attempt(self, batch: list[Delivery[Any]]) -> None:
        spec = self.spec
        async with self.kit.unit_of_work() as uow:
            todo = batch
            if spec.inbox:
                # rejected keys are not claimed: a corrected message may reuse its id, and a
                # rejection repeated after a crash gives the same (deterministic) dead letter
                fresh = await claim(uow.session, self.kit.inbox, spec.inbox_name or spec.durable,
                                    [d.key for d in batch if d.rejection is None])
                todo, seen = [], set()
                for d in batch:
                    if (d.rejection is not None or d.key in fresh) and d.key not in seen:
                        seen.add(d.key)
                        todo.append(d)
                self.stats.duplicates += len(batch) - len(todo)
            rejected = [d for d in todo if d.rejection is not None]
            if not spec.handles_rejections:
                for d in rejected:
                    assert d.rejection is not None
                    uow.dead_letter(d.subject, d.data, d.rejection.code, d.rejection.reason, msg_id=d.key,
                                    **d.where())
                todo = [d for d in todo if d.rejection is None]
            skipped = sum(1 for d in todo if d.value is None and d.rejection is None)
            todo = [d for d in todo if d.value is not None or d.rejection is not None]
            if todo:
                await spec.handle(uow, todo)
        self.stats.skipped += skipped
        self.stats.rejected += len(rejected)
        self.stats.handled += len(todo)
        for d in rejected:
            assert d.rejection is not None
            self.stats.by_code[d.rejection.code] = self.stats.by_code.get(d.rejection.code, 0) + 1
            log.info("consumer.rejected", durable=spec.durable, code=d.rejection.code, key=d.key[:100])

    async def _handle(self, batch: list[Delivery[Any]], started: float) -> None:
        try:
            await self._attempt(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(batch, exc, started)
            return
        await self._settle([d.msg for d in batch], ack=True)

    async def _failed(self, batch: list[Delivery[Any]], exc: Exception, started: float) -> None:
        spec = self.spec
        self.stats.failures += 1
        error = f"{type(exc).__name__}: {exc}"[:500]
        self.last_error = error
        if transient(exc) or self._stopping:
            n = max(d.deliveries for d in batch)
            log.warning("consumer.batch_failed", durable=spec.durable, size=len(batch), deliveries=n, error=error,
                        retry_in=self._delay(n))
            await self._settle([d.msg for d in batch], ack=False, delay=self._delay(n))
            return
        if len(batch) > 1:
            if time.monotonic() - started > self.ack_wait / 3:  # keep the rest from being redelivered
                await asyncio.gather(*(d.msg.in_progress() for d in batch), return_exceptions=True)
            half = len(batch) // 2
            log.warning("consumer.batch_split", durable=spec.durable, size=len(batch), error=error)
            await self._handle(batch[:half], started)
            await self._handle(batch[half:], started)
            return
        d = batch[0]
        if d.deliveries < spec.max_deliveries:
            self.stats.retried += 1
            log.warning("consumer.message_failed", durable=spec.durable, key=d.key[:100], deliveries=d.deliveries,
                        error=error, retry_in=self._delay(d.deliveries))
            await self._settle([d.msg], ack=False, delay=self._delay(d.deliveries))
            return
        try:
            # its key is not claimed: once the bug is fixed, `sinergi deadletter replay` sends
            # the same message (same key) again and it must be handled then; a redelivery of
            # this one meanwhile dead-letters again under the same deterministic id (one letter)
            async with self.kit.unit_of_work() as uow:
                uow.dead_letter(d.subject, d.data, HANDLER_ERROR, error, msg_id=d.key, **d.where())
        except Exception as exc2:  # the database is away: dead letters need it too; later
            log.error("consumer.dead_letter_failed", durable=spec.durable, error=str(exc2)[:300])
            await self._settle([d.msg], ack=False, delay=self._delay(d.deliveries))
            return
        self.stats.dead_lettered += 1
        self.stats.by_code[HANDLER_ERROR] = self.stats.by_code.get(HANDLER_ERROR, 0) + 1
        log.error("consumer.dead_lettered", durable=spec.durable, key=d.key[:100], deliveries=d.deliveries,
                  error=error)
        await self._settle([d.msg], ack=True)

    def _delay(self, deliveries: int) -> float:
        b = self.spec.backoff
        return b[min(max(deliveries, 1), len(b)) - 1]

    async def _settle(self, msgs: list[Msg], *, ack: bool, delay: float | None = None) -> None:
        # one after another: an ack only appends to nats-py's write buffer, and a task per
        # message (gather) cost more than the ack itself
        for m in msgs:
            try:
                if ack:
                    await m.ack()
                else:
                    await m.nak(delay=delay)
            except Exception:  # connection lost: not acked, redelivered, answered idempotently
                pass
