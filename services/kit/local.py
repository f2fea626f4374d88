"""The system `sinergi up` runs on one machine, and how every `sinergi` command finds it.

`sinergi up` keeps everything under one data dir (default `./.sinergi`). Besides the servers'
data it generates, at the first start, what a deployment gets from `sinergi deploy init`:

  secrets/auth-secret              signs staff tokens (SINERGI_AUTH_SECRET)
  secrets/pseudonym-key            HMAC key of the audit stream's person pseudonyms
  secrets/audit-signing-key.pem    Ed25519 key that signs the audit checkpoints
  secrets/nats/<user>.env          one NATS identity each (natsperm): svc-<service> for the four
                                   services, `ops` for migrations, `operator` for the CLI
  users.yaml                       staff accounts (`sinergi users add`)
  nats/auth.conf                   those NATS users for the embedded nats-server: bcrypt hashes
                                   and permissions, as deploy writes them for production
  endpoints.json                   while `sinergi up` runs: NATS, PostgreSQL, service URLs, pids

Files are created 0600 (directories 0700) and never printed. `up` hands each service its own
values through the environment; a command run beside it (`sinergi agency publish`, `audit
verify`, `users add` ...) reads them here, so nobody has to set a variable.

Which data dir a command uses: the one given (`sinergi --data-dir DIR ...` or SINERGI_DATA_DIR);
else `./.sinergi` if `sinergi up` made it (it holds `secrets/`) and the environment names no
servers (SINERGI_NATS_URL, SINERGI_DATABASE_URL: a production operator's settings win over a
folder they happen to stand in); else none, and settings come from the environment as in
production.

The `operator` identity exists only here. A regency gives each agency, auditor and operator
their own credentials (`sinergi deploy init`); on one developer's machine the commands run
beside `sinergi up` share one identity that may do what ops, any agency and an auditor may.
"""
from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contracts.subjects import CRVS_DEATHS, CRVS_RECEIPTS
from services.kit import natsperm
from services.kit.natsperm import JS, Identity
from services.kit.settings import Settings

if TYPE_CHECKING:
    from nats.aio.client import Client

DEFAULT_DIR = Path(".sinergi")
OPERATOR = "operator"
OPS = "ops"
# the environment names servers: a command run there does not look for ./.sinergi
_SERVER_VARS = ("SINERGI_NATS_URL", "SINERGI_DATABASE_URL")


class NoSystem(RuntimeError):
    """There is no (running) Sinergi where the command looked; the message says what to do."""


class Unreachable(RuntimeError):
    """A server of the system did not answer; the message names it and says what to do."""


def service_user(service: str) -> str:
    return natsperm.service(service).user


def operator() -> Identity:
    """Development only: the `sinergi` commands run beside `sinergi up` (agency publish, audit
    verify, dead letters, status). What ops, every program's agency, the civil registry
    (Dukcapil) and an auditor may do."""
    ops, auditor = natsperm.ops(), natsperm.auditor(OPERATOR)
    publish = [*ops.publish, *auditor.publish, "agency.*.enrolments", CRVS_DEATHS,
               # dead letters and stream contents, for operators' reading commands
               f"{JS}.STREAM.MSG.GET.*", f"{JS}.CONSUMER.CREATE.*", "$JS.FC.>"]
    return Identity(OPERATOR, "operator", list(dict.fromkeys(publish)),
                    [f"_INBOX.{OPERATOR}.>", "agency.*.receipts", "agency.*.proposals", CRVS_RECEIPTS],
                    description="development only: the sinergi commands beside `sinergi up`")


def identities() -> list[Identity]:
    """The embedded NATS's users: the four services and ops as in production, and `operator`."""
    ids = [natsperm.service(s) for s in natsperm.SERVICES] + [natsperm.ops(), operator()]
    # as natsperm.identities does: a service never receives what goes to another identity's inbox
    for ident in ids:
        if ident.kind == "service":
            ident.subscribe_deny = [f"{o.inbox_prefix}.>" for o in ids if o is not ident]
    return ids


def _write_new(path: Path, make: Callable[[], bytes]) -> bool:
    """Create `path` with mode 0600 from `make()` unless it exists; True if it was created. The
    file is never readable by others, not even for a moment (O_EXCL, mode at creation)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(make())
    return True


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _signing_key() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _credentials(ident: Identity) -> bytes:
    """A fresh password for one identity, in the format of deploy's credentials files."""
    return (f"# NATS identity {ident.user}: {ident.description}\n"
            f"NATS_USER={ident.user}\nNATS_PASSWORD={secrets.token_urlsafe(32)}\n"
            f"NATS_INBOX_PREFIX={ident.inbox_prefix}\n").encode()


def _env_file(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def _alive(pid: int) -> bool:
    if pid <= 0:  # os.kill(0, 0) would ask about our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


@dataclass(frozen=True)
class LocalSystem:
    """One data dir of `sinergi up`: its secrets, and its endpoints while it runs."""

    data_dir: Path

    @property
    def secrets_dir(self) -> Path:
        return self.data_dir / "secrets"

    @property
    def users_file(self) -> Path:
        return self.data_dir / "users.yaml"

    @property
    def signing_key_file(self) -> Path:
        return self.secrets_dir / "audit-signing-key.pem"

    @property
    def endpoints_file(self) -> Path:
        return self.data_dir / "endpoints.json"

    @property
    def nats_auth_file(self) -> Path:
        return self.data_dir / "nats" / "auth.conf"

    def _nats_file(self, user: str) -> Path:
        return self.secrets_dir / "nats" / f"{user}.env"

    # --- first start ---------------------------------------------------------------------

    @classmethod
    def create(cls, data_dir: Path) -> tuple[LocalSystem, bool]:
        """Generate whatever secret is missing (all of them at the first start); True if any was."""
        system = cls(Path(data_dir).resolve())
        _private_dir(system.secrets_dir)
        _private_dir(system.secrets_dir / "nats")
        made = [
            _write_new(system.secrets_dir / "auth-secret", lambda: secrets.token_urlsafe(48).encode()),
            _write_new(system.secrets_dir / "pseudonym-key", lambda: secrets.token_urlsafe(32).encode()),
            _write_new(system.signing_key_file, _signing_key),
            _write_new(system.users_file, lambda: b"users: []\n"),
        ]
        made += [_write_new(system._nats_file(ident.user), partial(_credentials, ident)) for ident in identities()]
        return system, any(made)

    def write_nats_auth(self) -> Path:
        """nats/auth.conf for the embedded server, from the identities as this code defines them.
        Written at every start (about 1 s of bcrypt), so permissions follow the code."""
        from services.kit.deploy import auth_block, render

        ids = identities()
        text = render(auth_block(ids, {i.user: self.nats_password(i.user) for i in ids}))
        path = self.nats_auth_file
        _private_dir(path.parent)
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        _write_new(tmp, lambda: ("# generated by `sinergi up`: users, bcrypt hashes, permissions\n" + text).encode())
        tmp.replace(path)
        return path

    # --- reading -------------------------------------------------------------------------

    def _secret(self, name: str) -> str:
        path = self.secrets_dir / name
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            raise NoSystem(f"{path} is missing: start Sinergi once with `sinergi up --data-dir {self.data_dir}` "
                           "(it generates the secrets)") from None

    @property
    def auth_secret(self) -> str:
        return self._secret("auth-secret")

    @property
    def pseudonym_key(self) -> str:
        return self._secret("pseudonym-key")

    def nats_password(self, user: str) -> str:
        try:
            return _env_file(self._nats_file(user))["NATS_PASSWORD"]
        except (FileNotFoundError, KeyError):
            raise NoSystem(f"no NATS credentials for {user} in {self.secrets_dir / 'nats'}: start Sinergi "
                           f"with `sinergi up --data-dir {self.data_dir}` (it generates them)") from None

    def endpoints(self) -> dict[str, Any]:
        """What the running `sinergi up` published; NoSystem if it is not running."""
        try:
            ep: dict[str, Any] = json.loads(self.endpoints_file.read_text())
        except (FileNotFoundError, ValueError):
            raise NoSystem(f"Sinergi is not running in {self.data_dir}: start it with `scripts/up` in the folder "
                           f"that holds it, or `sinergi up --data-dir {self.data_dir}`") from None
        if not _alive(int(ep.get("pid", 0))):
            raise NoSystem(f"Sinergi is not running in {self.data_dir} (its `sinergi up`, pid {ep.get('pid')}, is "
                           "gone without cleaning up): start it again with `scripts/up` or `sinergi up`")
        return ep

    def running_pid(self) -> int | None:
        try:
            return int(self.endpoints()["pid"])
        except NoSystem:
            return None

    # --- what processes get ---------------------------------------------------------------

    def values(self, identity: str | None, *, nats_url: str, database_url: str, http_port_base: int,
               nats_users: bool) -> dict[str, Any]:
        """Settings fields for one NATS identity (None: leave NATS credentials to the environment)."""
        vals: dict[str, Any] = {"nats_url": nats_url, "database_url": database_url, "http_port_base": http_port_base,
                                "auth_secret": self.auth_secret, "users_file": str(self.users_file)}
        if nats_users and identity:
            vals.update(nats_user=identity, nats_password=self.nats_password(identity), nats_creds=None)
        return vals

    def service_env(self, service: str, *, nats_url: str, database_url: str, http_port_base: int,
                    nats_users: bool) -> dict[str, str]:
        """The environment `sinergi up` gives one service process (only disbursement gets its keys)."""
        vals = self.values(service_user(service), nats_url=nats_url, database_url=database_url,
                           http_port_base=http_port_base, nats_users=nats_users)
        env = {f"SINERGI_{k.upper()}": str(v) for k, v in vals.items() if v is not None}
        if service == "disbursement":
            env.update(SINERGI_DISBURSEMENT_SIGNING_KEY_FILE=str(self.signing_key_file),
                       SINERGI_DISBURSEMENT_PSEUDONYM_KEY=self.pseudonym_key)
        return env

    def settings(self, identity: str = OPERATOR) -> Settings:
        """Settings to reach the running system as `identity` (a command beside `sinergi up`)."""
        ep = self.endpoints()
        return Settings(**self.values(identity, nats_url=ep["nats"], database_url=ep["database"],
                                      http_port_base=int(ep["http_port_base"]),
                                      nats_users=bool(ep.get("nats_users"))))

    def service_url(self, service: str) -> str:
        return str(self.endpoints()["services"][service]["url"])


# --- the data dir a command works on ---------------------------------------------------------

_given: Path | None = None  # `sinergi --data-dir DIR` or SINERGI_DATA_DIR, set by the CLI's root callback


def choose(data_dir: Path | None) -> None:
    global _given
    _given = data_dir


def given() -> Path | None:
    return _given


def current() -> LocalSystem | None:
    """The data dir this command works on, or None (settings from the environment)."""
    if _given is not None:
        return LocalSystem(_given.resolve())
    # `secrets/`, not just the folder: other tools keep things in ./.sinergi too (e.g. a
    # disbursement service run without keys generates development keys in .sinergi/disbursement)
    made_by_up = (DEFAULT_DIR / "secrets").is_dir()
    if made_by_up and not any(os.environ.get(v) for v in _SERVER_VARS):
        return LocalSystem(DEFAULT_DIR.resolve())
    return None


def settings(identity: str = OPERATOR) -> Settings:
    """Settings for a command: the running system of the data dir if there is one, else the
    environment (SINERGI_*, .env) as in production. `identity` is the NATS user it connects as."""
    system = current()
    return system.settings(identity) if system else Settings()


def service_url(service: str) -> str:
    system = current()
    if system:
        return system.service_url(service)
    s = Settings()
    return f"http://127.0.0.1:{s.port(service)}"


def users_file() -> Path | None:
    """The staff accounts file: the data dir's, else SINERGI_USERS_FILE, else None."""
    system = current()
    if system:
        if not system.data_dir.is_dir():  # a mistyped --data-dir must not start a new one
            raise NoSystem(f"no Sinergi data dir at {system.data_dir}: start it there with `sinergi up --data-dir "
                           f"{system.data_dir}`, or give the right --data-dir")
        _write_new(system.users_file, lambda: b"users: []\n")  # 0600, as `sinergi up` makes it
        return system.users_file
    configured = Settings().users_file
    return Path(configured) if configured else None


def disbursement_keys() -> dict[str, str]:
    """DisbursementSettings fields for the data dir's keys ({} without a data dir: the environment's)."""
    system = current()
    if system is None:
        return {}
    return {"signing_key_file": str(system.signing_key_file), "pseudonym_key": system.pseudonym_key}


def where() -> str:
    """Where a command's settings came from, for error messages."""
    system = current()
    if system:
        return f"the Sinergi in {system.data_dir}"
    if any(os.environ.get(v) for v in _SERVER_VARS):
        return "servers named by SINERGI_NATS_URL / SINERGI_DATABASE_URL"
    return f"no {DEFAULT_DIR} in {Path.cwd()}, so SINERGI_* settings or their defaults"


async def connect(s: Settings, name: str) -> Client:
    """A NATS connection for a short command: fails within seconds with one clear line (the
    services' connections retry forever, which is right for a service and wrong for a command)."""
    import nats
    from nats.errors import NoServersError

    from services.kit.bus import connect_options

    seen: list[BaseException] = []

    async def remember(exc: Exception) -> None:  # instead of nats-py's traceback per attempt
        seen.append(exc)

    opts = {**connect_options(s, name), "max_reconnect_attempts": 1, "reconnect_time_wait": 0.5,
            "connect_timeout": 3, "error_cb": remember}
    try:
        return await nats.connect(**opts)
    except (NoServersError, OSError, TimeoutError) as exc:
        cause = seen[-1] if seen else exc
        raise Unreachable(nats_failure(s, cause)) from None


def nats_failure(s: Settings, cause: BaseException) -> str:
    from nats.errors import AuthorizationError

    who = f" as {s.nats_user}" if s.nats_user else ""
    if isinstance(cause, AuthorizationError) or "authorization" in str(cause).lower():
        return (f"NATS at {s.nats_url} refused the credentials{who} ({where()}): check SINERGI_NATS_USER / "
                "SINERGI_NATS_PASSWORD, or run the command in the folder of the `sinergi up` that started it")
    return (f"cannot reach NATS at {s.nats_url} ({where()}): {type(cause).__name__}: {cause or 'no answer'}. "
            "Is Sinergi running? Start it with `scripts/up`, or set SINERGI_NATS_URL")

