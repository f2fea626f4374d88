"""Operators' commands: `sinergi status` and `sinergi deadletter list|show|replay|discard`.

`status` is one look at the whole system: each service's `/readyz` checks and outbox (from its
`/metrics`), every durable consumer's lag, every stream's size, dead letters per service (the
DEADLETTER stream counted per subject) and disk (JetStream's store, the data dir). It asks
NATS directly, so consumer lag and dead letters show even while a service is down.

Dead letters are an operator's queue. `list` filters by service, reason code (a prefix),
age and count; `show` prints one with its payload; `replay` publishes the original bytes into
the original subject once the cause is fixed (the whole original, read back from its stream
when the dead letter kept only the first 64 KiB, and checked against the recorded SHA-256);
`discard` deletes one from DEADLETTER. DEADLETTER keeps letters for
`SINERGI_DEADLETTER_MAX_AGE_DAYS` (30) days: they hold personal data (docs/SECURITY.md).

Settings come from the running `sinergi up` of the data dir when there is one (kit.local),
else from the environment, as for every command. Errors are one line: what failed, what to do.
"""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import re
import shutil
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import typer
from nats.js.api import ConsumerConfig, DeliverPolicy, StreamInfo
from nats.js.errors import NotFoundError
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from contracts.deadletter import DeadLetter
from contracts.subjects import DEADLETTER_STREAM, STREAMS, Names
from services.kit.settings import SERVICES, Settings

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

out = Console()
err = Console(stderr=True)
REPLAY_HEADER = "Sinergi-Replay-Of"  # "<DEADLETTER stream>/<seq>" on every replayed message


class OpsError(RuntimeError):
    """A failure an operator can act on; the message is the one line shown."""


# --- where the system is (kit.local when `sinergi up` runs here, else the environment) --------

def settings() -> Settings:
    try:
        from services.kit import local
    except ImportError:  # pragma: no cover - before the data-dir discovery exists
        return Settings()
    return local.settings()


def service_url(service: str, s: Settings) -> str:
    try:
        from services.kit import local
    except ImportError:  # pragma: no cover
        return f"http://127.0.0.1:{s.port(service)}"
    return local.service_url(service)


def data_dir() -> Path | None:
    try:
        from services.kit import local
    except ImportError:  # pragma: no cover
        return None
    system = local.current()
    return system.data_dir if system else None


async def connect(s: Settings) -> Client:
    try:
        from services.kit import local
    except ImportError:  # pragma: no cover
        import nats
        try:
            return await nats.connect(s.nats_url, connect_timeout=3, max_reconnect_attempts=1)
        except Exception as exc:
            raise OpsError(f"cannot reach NATS at {s.nats_url}: {exc}; is Sinergi running?") from None
    try:
        return await local.connect(s, "sinergi-ops")
    except (local.Unreachable, local.NoSystem) as exc:
        raise OpsError(str(exc)) from None


def _nats_error(exc: BaseException, what: str) -> OpsError:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, NotFoundError):
        return OpsError(f"{what}: not found on the server; run `sinergi migrate` to create the streams")
    if "permission" in text.lower() or "authorization" in text.lower():
        return OpsError(f"{what}: the NATS identity in use may not do this ({text}); use the `ops` credentials")
    return OpsError(f"{what}: {type(exc).__name__}: {text}")


# --- status -----------------------------------------------------------------------------------

@dataclass
class ServiceView:
    name: str
    url: str
    checks: dict[str, str] = field(default_factory=dict)
    error: str | None = None          # unreachable, or not ready (what /readyz said)
    backlog: float | None = None      # outbox rows waiting (from /metrics)
    oldest: float | None = None       # seconds the oldest has waited
    set_aside: float | None = None

    @property
    def ready(self) -> bool:
        return self.error is None and all(v == "ok" for v in self.checks.values())


@dataclass
class ConsumerView:
    stream: str
    name: str
    pending: int
    ack_pending: int
    redelivered: int


@dataclass
class StreamView:
    name: str
    messages: int
    bytes: int
    consumers: int


@dataclass
class Status:
    services: list[ServiceView]
    consumers: list[ConsumerView] = field(default_factory=list)
    streams: list[StreamView] = field(default_factory=list)
    dead_letters: dict[str, int] = field(default_factory=dict)  # service -> letters in DEADLETTER
    jetstream_bytes: int | None = None
    jetstream_limit: int | None = None
    disk: dict[str, int] = field(default_factory=dict)         # what -> bytes
    errors: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.errors and all(s.ready for s in self.services)


Fetch = Callable[[str, str], Awaitable[httpx.Response]]  # (service, path) -> response


async def _service(name: str, url: str, fetch: Fetch) -> ServiceView:
    view = ServiceView(name, url)
    try:
        ready, metrics = await asyncio.gather(fetch(name, "/readyz"), fetch(name, "/metrics"))
    except httpx.HTTPError as exc:
        view.error = f"not reachable at {url} ({type(exc).__name__})"
        return view
    try:
        view.checks = dict(ready.json().get("checks", {}))
    except ValueError:
        view.error = f"/readyz answered {ready.status_code} without JSON"
    if ready.status_code != 200 and view.error is None and not view.checks:
        view.error = f"/readyz answered {ready.status_code}"
    if metrics.status_code == 200:
        for fam in text_string_to_metric_families(metrics.text):
            for sample in fam.samples:
                if sample.name == "sinergi_outbox_backlog":
                    view.backlog = sample.value
                elif sample.name == "sinergi_outbox_oldest_age_seconds":
                    view.oldest = sample.value
                elif sample.name == "sinergi_outbox_set_aside_rows":
                    view.set_aside = sample.value
    return view


async def _streams(js: JetStreamContext, names: Names, st: Status) -> None:
    missing = []
    for bare in STREAMS:
        name = names.stream(bare)
        try:
            info: StreamInfo = await js.stream_info(name, subjects_filter=names.subject("deadletter.>")
                                                    if bare == DEADLETTER_STREAM else None)
        except NotFoundError:
            missing.append(name)
            continue
        except Exception as exc:
            st.errors.append(str(_nats_error(exc, f"stream {name}")))
            continue
        s = info.state
        st.streams.append(StreamView(name, int(s.messages or 0), int(s.bytes or 0), int(s.consumer_count or 0)))
        if bare == DEADLETTER_STREAM:
            for subject, n in (s.subjects or {}).items():
                st.dead_letters[names.bare(subject).removeprefix("deadletter.")] = int(n)
        try:
            for c in await js.consumers_info(name):
                st.consumers.append(ConsumerView(name, c.name, int(c.num_pending or 0), int(c.num_ack_pending or 0),
                                                 int(c.num_redelivered or 0)))
        except Exception as exc:
            st.errors.append(str(_nats_error(exc, f"consumers of {name}")))
    if missing:
        st.errors.append(f"streams missing on {js._nc.connected_url.netloc if js._nc.connected_url else 'NATS'}: "
                         f"{', '.join(missing)}; run `sinergi migrate` to create them")


def _du(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            continue
    return total


async def collect(s: Settings, fetch: Fetch, urls: dict[str, str], js: JetStreamContext | None,
                  data: Path | None = None) -> Status:
    """Everything `status` shows (`fetch` reaches the services; tests hand in ASGI clients)."""
    st = Status(list(await asyncio.gather(*(_service(svc, urls[svc], fetch) for svc in SERVICES))))
    if js is not None:
        await _streams(js, s.names, st)
        try:
            acct = await js.account_info()
            st.jetstream_bytes = int(acct.storage or 0)
            st.jetstream_limit = int(acct.limits.max_storage or 0) if acct.limits else None
        except Exception as exc:
            st.errors.append(str(_nats_error(exc, "JetStream account")))
    if data is not None:
        st.disk = await asyncio.to_thread(_disk, data)
    return st


def _disk(data: Path) -> dict[str, int]:
    """Bytes used under the data dir by JetStream and PostgreSQL, and free on its disk."""
    if not data.is_dir():
        return {}
    disk = {what: _du(sub) for what, sub in (("JetStream store", data / "nats" / "jetstream"),
                                             ("PostgreSQL", data / "pg")) if sub.is_dir()}
    disk["free on the data dir's disk"] = shutil.disk_usage(data).free
    return disk


def _size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def _num(n: float | None) -> str:
    return "-" if n is None else f"{n:,.0f}"


def render(st: Status, console: Console = out) -> None:
    t = Table(title="services")
    for col in ("service", "ready", "outbox waiting", "oldest", "set aside", "dead letters"):
        t.add_column(col)
    problems = []
    for v in st.services:
        t.add_row(v.name, "[green]yes" if v.ready else "[red]no", _num(v.backlog),
                  "-" if v.oldest is None else f"{v.oldest:.0f} s", _num(v.set_aside),
                  _num(st.dead_letters.get(v.name, 0)))
        if v.error:
            problems.append(f"{v.name}: {v.error}")
        problems += [f"{v.name} {k}: {val}" for k, val in v.checks.items() if val != "ok"]
    console.print(t)
    for line in problems:
        console.print(line, style="red", markup=False, highlight=False, soft_wrap=True)
    if st.consumers:
        c = Table(title="consumers (lag: messages waiting on the server)")
        for col in ("stream", "consumer", "waiting", "unacknowledged", "redelivering"):
            c.add_column(col, overflow="fold")  # a durable's name whole, on two lines if need be
        for cv in sorted(st.consumers, key=lambda x: (x.stream, x.name)):
            c.add_row(cv.stream, cv.name, _num(cv.pending), _num(cv.ack_pending), _num(cv.redelivered))
        console.print(c)
    if st.streams:
        s = Table(title="streams")
        for col in ("stream", "messages", "size", "consumers"):
            s.add_column(col)
        for sv in st.streams:
            s.add_row(sv.name, _num(sv.messages), _size(sv.bytes), str(sv.consumers))
        console.print(s)
    disk = dict(st.disk)
    if st.jetstream_bytes is not None:
        limit = f" of {_size(st.jetstream_limit)}" if st.jetstream_limit and st.jetstream_limit > 0 else ""
        console.print(f"JetStream storage used: {_size(st.jetstream_bytes)}{limit}")
    for what, n in disk.items():
        console.print(f"{what}: {_size(n)}")
    for e in st.errors:
        console.print(e, style="red", markup=False, highlight=False, soft_wrap=True)


# --- dead letters ----------------------------------------------------------------------------

@dataclass
class Letter:
    seq: int
    time: dt.datetime | None
    letter: DeadLetter


def _since(text: str | None) -> dt.datetime | None:
    """`2h`, `3d`, `45m`, or an ISO date/time (UTC if no zone)."""
    if not text:
        return None
    m = re.fullmatch(r"(\d+)\s*([smhd])", text.strip())
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=int(m.group(1)) * unit)
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise OpsError(f"--since {text!r}: give an age (45m, 2h, 3d) or a date (2026-11-23 or 2026-11-23T08:00)"
                       ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _parse(seq: int, data: bytes, when: dt.datetime | None) -> Letter | None:
    try:
        return Letter(seq, when, DeadLetter.model_validate_json(data))
    except ValueError:
        return None  # not a dead letter (someone published junk on deadletter.*): skipped


async def list_letters(js: JetStreamContext, names: Names, *, service: str | None = None, code: str | None = None,
                       since: dt.datetime | None = None, limit: int = 50, idle: float = 2.0) -> list[Letter]:
    """The newest `limit` dead letters matching the filters, oldest first."""
    stream = names.stream(DEADLETTER_STREAM)
    subject = names.deadletter(service) if service else names.subject("deadletter.>")
    try:
        info = await js.stream_info(stream)
    except Exception as exc:
        raise _nats_error(exc, f"stream {stream}") from None
    if not info.state.messages:
        return []
    last = int(info.state.last_seq or 0)
    cfg = (ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since) if since
           else ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
    kept: deque[Letter] = deque(maxlen=max(1, limit))
    sub = await js.subscribe(subject, ordered_consumer=True, stream=stream, config=cfg,
                             deliver_policy=cfg.deliver_policy)
    try:
        while True:
            try:
                m = await sub.next_msg(timeout=idle)
            except TimeoutError:
                break
            md = m.metadata
            letter = _parse(md.sequence.stream, m.data, md.timestamp)
            if letter is not None and (code is None or letter.letter.reason_code.startswith(code)):
                kept.append(letter)
            if md.sequence.stream >= last or md.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return list(kept)


async def get_letter(js: JetStreamContext, names: Names, seq: int) -> Letter:
    stream = names.stream(DEADLETTER_STREAM)
    try:
        raw = await js.get_msg(stream, seq)
    except NotFoundError:
        raise OpsError(f"no dead letter {seq} in {stream}: discarded, older than the retention "
                       f"(SINERGI_DEADLETTER_MAX_AGE_DAYS), or never there; `sinergi deadletter list` shows "
                       "what there is") from None
    except Exception as exc:
        raise _nats_error(exc, f"dead letter {seq}") from None
    letter = _parse(seq, raw.data or b"", raw.time)
    if letter is None:
        raise OpsError(f"message {seq} in {stream} is not a dead letter (not a contracts.deadletter.DeadLetter)")
    return letter


@dataclass
class Replayed:
    subject: str
    size: int
    msg_id: str | None
    stream: str
    seq: int
    from_original: bool


async def original(js: JetStreamContext, dl: DeadLetter) -> tuple[bytes, dict[str, str]] | None:
    """The whole original message and its headers, from where it was read, if still there and
    if it is the same bytes (SHA-256)."""
    if not dl.stream or not dl.stream_seq:
        return None
    try:
        raw = await js.get_msg(dl.stream, dl.stream_seq)
    except Exception:
        return None
    data = raw.data or b""
    if dl.payload_sha256 and hashlib.sha256(data).hexdigest() != dl.payload_sha256:
        return None
    return data, dict(raw.headers or {})


async def replay(js: JetStreamContext, names: Names, seq: int, to_subject: str | None = None) -> Replayed:
    """Publish a dead letter's original message again, into its original subject (or
    `to_subject`), with its original Nats-Msg-Id, so every idempotency record treats it as the
    same message: handled once the cause is fixed, ignored if it was handled meanwhile."""
    letter = (await get_letter(js, names, seq)).letter
    found = await original(js, letter)
    if found is not None:
        data, headers = found
    elif letter.payload_truncated:
        raise OpsError(f"dead letter {seq} kept only the first {len(base64.b64decode(letter.payload_b64))} of "
                       f"{letter.payload_size} bytes, and the whole original is no longer at "
                       f"{letter.stream or '?'} #{letter.stream_seq or '?'} (or differs from its SHA-256): "
                       "it cannot be replayed")
    else:
        data = base64.b64decode(letter.payload_b64)
        headers = {"Nats-Msg-Id": letter.msg_id} if letter.msg_id and not letter.msg_id.startswith("seq-") else {}
    keep = {k: v for k, v in headers.items() if k == "Nats-Msg-Id" or k in ("traceparent", "tracestate")}
    keep[REPLAY_HEADER] = f"{names.stream(DEADLETTER_STREAM)}/{seq}"
    subject = to_subject or letter.subject
    try:
        ack = await js.publish(subject, data, headers=keep)
    except Exception as exc:
        raise _nats_error(exc, f"publishing to {subject}") from None
    if ack.duplicate:
        raise OpsError(f"JetStream dropped the replay as a repeat: a message with Nats-Msg-Id "
                       f"{keep.get('Nats-Msg-Id')!r} reached {ack.stream} within its de-duplication window "
                       "(SINERGI_DEDUP_WINDOW_SECONDS, 10 minutes): replay again after that")
    return Replayed(subject, len(data), keep.get("Nats-Msg-Id"), ack.stream, ack.seq, found is not None)


async def discard(js: JetStreamContext, names: Names, seq: int) -> None:
    await get_letter(js, names, seq)  # says clearly when there is none
    try:
        await js.delete_msg(names.stream(DEADLETTER_STREAM), seq)
    except Exception as exc:
        raise _nats_error(exc, f"discarding dead letter {seq}") from None


# --- the commands ----------------------------------------------------------------------------

def _run(work: Callable[[], Coroutine[Any, Any, int | None]]) -> None:
    """Run a command; an OpsError is one red line and exit code 1, never a traceback."""
    try:
        code = asyncio.run(work())
    except OpsError as exc:
        err.print(str(exc), style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if code:
        raise typer.Exit(code)


async def _with_js(work: Callable[[JetStreamContext, Settings], Awaitable[int | None]]) -> int | None:
    s = settings()
    nc = await connect(s)
    try:
        return await work(nc.jetstream(), s)
    finally:
        await nc.close()


def _status(as_json: bool) -> None:
    async def work() -> int:
        s = settings()
        urls = {svc: service_url(svc, s) for svc in SERVICES}
        async with httpx.AsyncClient(timeout=5) as client:
            async def fetch(svc: str, path: str) -> httpx.Response:
                return await client.get(urls[svc] + path)
            nats_error: str | None = None
            try:
                nc: Client | None = await connect(s)
            except OpsError as exc:
                nc, nats_error = None, str(exc)
            try:
                st = await collect(s, fetch, urls, nc.jetstream() if nc else None, data_dir())
            finally:
                if nc is not None:
                    await nc.close()
        if nats_error:
            st.errors.insert(0, nats_error)
        if as_json:
            out.print_json(json.dumps(_jsonable(st)))
        else:
            render(st)
        return 0 if st.healthy else 1
    _run(work)


def _jsonable(st: Status) -> dict[str, Any]:
    from dataclasses import asdict
    return {**asdict(st), "healthy": st.healthy}


def _letters_table(letters: list[Letter]) -> Table:
    t = Table(title=f"dead letters ({len(letters)})")
    for col in ("seq", "when (UTC)", "service", "code", "subject", "size", "reason"):
        t.add_column(col, overflow="fold")
    for x in letters:
        d = x.letter
        when = (x.time or d.received_at).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        reason = d.reason if len(d.reason) <= 60 else d.reason[:59] + "…"  # `show SEQ` has it whole
        t.add_row(str(x.seq), when, d.service, d.reason_code, d.subject, _size(d.payload_size), reason)
    return t


def _show(letter: Letter, console: Console = out) -> None:
    d = letter.letter
    t = Table(show_header=False, title=f"dead letter {letter.seq}")
    t.add_column("field")
    t.add_column("value", overflow="fold")
    for k, v in d.model_dump(exclude={"payload_b64"}).items():
        t.add_row(k, "" if v is None else str(v))
    console.print(t)
    data = base64.b64decode(d.payload_b64)
    try:
        text = json.dumps(json.loads(data), indent=2, ensure_ascii=False)
    except ValueError:
        text = repr(data[:4096])
    more = " (the first 64 KiB; replay reads the whole original)" if d.payload_truncated else ""
    console.print(f"payload{more}:")
    console.print(text[:20_000], markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    dl = typer.Typer(help="Dead letters: messages a service could not accept (stream DEADLETTER).",
                     no_args_is_help=True)
    app.add_typer(dl, name="deadletter")

    @app.command("status")
    def status(as_json: bool = typer.Option(False, "--json", help="machine-readable")) -> None:
        """One look: each service's health and outbox, consumer lag, dead letters, streams, disk."""
        _status(as_json)

    @dl.command("list")
    def dl_list(service: str | None = typer.Option(None, help="intake, registry, disbursement or reporting"),
                code: str | None = typer.Option(None, help="reason code or its start, e.g. rjct.nik"),
                since: str | None = typer.Option(None, help="age (45m, 2h, 3d) or date (2026-11-23)"),
                limit: int = typer.Option(50, min=1, help="show at most this many, the newest")) -> None:
        """The newest dead letters, filtered."""
        async def work(js: JetStreamContext, s: Settings) -> None:
            letters = await list_letters(js, s.names, service=service, code=code, since=_since(since), limit=limit)
            out.print(_letters_table(letters))
        _run(lambda: _with_js(work))

    @dl.command("show")
    def dl_show(seq: int = typer.Argument(..., help="the dead letter's sequence (from `list`)")) -> None:
        """One dead letter, with its payload."""
        async def work(js: JetStreamContext, s: Settings) -> None:
            _show(await get_letter(js, s.names, seq))
        _run(lambda: _with_js(work))

    @dl.command("replay")
    def dl_replay(seq: int = typer.Argument(..., help="the dead letter's sequence"),
                  to_subject: str | None = typer.Option(None, help="publish here instead of the original subject")
                  ) -> None:
        """Publish the original message again into its subject (after the cause is fixed)."""
        async def work(js: JetStreamContext, s: Settings) -> None:
            r = await replay(js, s.names, seq, to_subject)
            source = "the original in its stream" if r.from_original else "the dead letter's copy"
            out.print(f"replayed dead letter {seq}: {r.size} bytes from {source} to {r.subject} "
                      f"({r.stream} #{r.seq}, Nats-Msg-Id {r.msg_id or '-'})", markup=False, highlight=False)
        _run(lambda: _with_js(work))

    @dl.command("discard")
    def dl_discard(seq: int = typer.Argument(..., help="the dead letter's sequence"),
                   yes: bool = typer.Option(False, "--yes", help="do not ask")) -> None:
        """Delete one dead letter from DEADLETTER (it is gone for good)."""
        if not yes:
            typer.confirm(f"delete dead letter {seq} for good?", abort=True)

        async def work(js: JetStreamContext, s: Settings) -> None:
            await discard(js, s.names, seq)
            out.print(f"discarded dead letter {seq}")
        _run(lambda: _with_js(work))


def letters(items: list[Letter]) -> Iterator[DeadLetter]:  # for tests and scripts
    return (x.letter for x in items)
