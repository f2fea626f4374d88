"""Staff accounts (akun petugas): one YAML file shared by the four services, managed with
`sinergi users add|list|disable|enable|password` and read by every service's `POST /auth/token`.

Passwords are hashed with Argon2id (argon2-cffi); the file never holds a password. A disabled
or removed account cannot log in, and its unexpired tokens stop working at once (kit.auth checks
the file on every request when SINERGI_USERS_FILE is set).
"""
from __future__ import annotations

import datetime as dt
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, Field, ValidationError

from contracts import wilayah
from services.kit.auth import Principal, Role

if TYPE_CHECKING:
    import typer

T = TypeVar("T")

_hasher = PasswordHasher()  # Argon2id, the library's current recommended parameters
_DUMMY = _hasher.hash("no such user: spend the same time as a real check")
MIN_PASSWORD = 12
# how deep a role's area must be: a village office works in one village, a kecamatan
# supervisor in one kecamatan; the others may hold any area or the whole deployment ("")
AREA_DIGITS = {Role.village_office: (10,), Role.kecamatan: (6,), Role.companion: (6, 10)}


class StaffUser(BaseModel):
    username: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{1,63}$")
    password_hash: str
    role: Role
    area: str = ""
    programs: list[str] = Field(default_factory=list)
    disabled: bool = False
    created_at: dt.datetime

    def principal(self) -> Principal:
        return Principal(user=self.username, role=self.role, area=self.area, programs=tuple(self.programs))


class UserError(ValueError):
    """A bad request about an account (the message says what is wrong)."""


def check_area(role: Role, area: str) -> str:
    d = wilayah.digits(area) if area else ""
    if d and not wilayah.exists(d):
        raise UserError(f"area {area!r} is not a known region code")
    need = AREA_DIGITS.get(role)
    if need and len(d) not in need:
        kinds = {10: "a village (10 digits)", 6: "a kecamatan (6 digits)"}
        raise UserError(f"role {role.value} needs " + " or ".join(kinds[n] for n in need) + f" as area, got {area!r}")
    return d


def check_password(username: str, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password too short: at least {MIN_PASSWORD} characters")
    if username.lower() in password.lower():
        raise UserError("password must not contain the username")


class UsersFile:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._cache: tuple[float, dict[str, StaffUser]] | None = None

    def load(self) -> dict[str, StaffUser]:
        """The accounts, re-read only when the file changed."""
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return {}
        with self._lock:
            if self._cache and self._cache[0] == mtime:
                return self._cache[1]
            raw = yaml.safe_load(self.path.read_text()) or {}
            users = {u["username"]: StaffUser.model_validate(u) for u in raw.get("users", [])}
            self._cache = (mtime, users)
            return users

    def _save(self, users: dict[str, StaffUser]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"users": [u.model_dump(mode="json") for u in sorted(users.values(), key=lambda u: u.username)]}
        # write then rename: a service reading concurrently sees the old or the new file, never half
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".users-")
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(data, f, sort_keys=False, allow_unicode=True)
        # keep the mode it had (0600 under `sinergi up`'s data dir; 0640 for a deployment, whose
        # services may read it as another user of the same group)
        try:
            mode = self.path.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = 0o640
        os.chmod(tmp, mode)
        os.replace(tmp, self.path)
        self._cache = None

    def add(self, username: str, password: str, role: Role | str, area: str = "",
            programs: list[str] | None = None) -> StaffUser:
        role = Role(role)
        users = dict(self.load())
        if username in users:
            raise UserError(f"user {username!r} exists (use `sinergi users password` or `enable`)")
        check_password(username, password)
        try:
            user = StaffUser(username=username, password_hash=_hasher.hash(password), role=role,
                             area=check_area(role, area), programs=list(programs or []),
                             created_at=dt.datetime.now(dt.UTC))
        except ValidationError as exc:
            raise UserError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
        users[username] = user
        self._save(users)
        return user

    def _change(self, username: str, **values: Any) -> StaffUser:
        users = dict(self.load())
        if username not in users:
            raise UserError(f"no user {username!r}")
        users[username] = users[username].model_copy(update=values)
        self._save(users)
        return users[username]

    def set_disabled(self, username: str, disabled: bool = True) -> StaffUser:
        return self._change(username, disabled=disabled)

    def set_password(self, username: str, password: str) -> StaffUser:
        check_password(username, password)
        return self._change(username, password_hash=_hasher.hash(password))

    def authenticate(self, username: str, password: str) -> Principal | None:
        """The user's Principal if the password is right and the account active; else None."""
        user = self.load().get(username)
        try:
            _hasher.verify(user.password_hash if user else _DUMMY, password)
        except (VerificationError, InvalidHashError):
            return None
        if user is None or user.disabled:
            return None
        return user.principal()

    def acting_as(self, username: str) -> Principal:
        """The account a command acts for (e.g. `sinergi cycle run --user`), as it is: its role,
        area and programs. UserError says what to do when there is no such active account."""
        users = self.load()
        if not users:
            raise UserError(f"no staff accounts yet in {self.path}: create one with `sinergi users add NAME "
                            "--role program_manager`, then give --user NAME")
        user = users.get(username)
        if user is None or user.disabled:
            known = ", ".join(n for n, u in users.items() if not u.disabled) or "none active"
            raise UserError(f"no active staff account {username!r} in {self.path} (accounts: {known}): give --user, "
                            f"or create it with `sinergi users add {username} --role program_manager`")
        return user.principal()

    def active(self, username: str) -> bool:
        user = self.load().get(username)
        return bool(user and not user.disabled)


def register_cli(app: typer.Typer) -> None:
    """`sinergi users add|list|disable|enable|password` (called from kit.deploy.register)."""
    import typer
    from rich.console import Console
    from rich.table import Table

    users_app = typer.Typer(help="Staff accounts (SINERGI_USERS_FILE): roles, areas, passwords.", no_args_is_help=True)
    app.add_typer(users_app, name="users")
    out = Console(stderr=True)

    def _file(path: Path | None) -> UsersFile:
        if path is None:
            from services.kit import local
            path = local.users_file()  # the data dir's beside `sinergi up`, else SINERGI_USERS_FILE
            if path is None:
                raise UserError("no users file: run this in the folder where `scripts/up` runs (it keeps them in "
                                ".sinergi/users.yaml), give --data-dir or --file, or set SINERGI_USERS_FILE")
        return UsersFile(path)

    file_opt = typer.Option(None, "--file", help="users file (default: the data dir's users.yaml beside "
                                                 "`sinergi up`, else SINERGI_USERS_FILE)")

    def _run(fn: Callable[[], T]) -> T:
        try:
            return fn()
        except UserError as exc:
            raise typer.BadParameter(str(exc)) from None

    @users_app.command("add")
    def add(username: str, role: Role = typer.Option(..., help="what the person does"),
            area: str = typer.Option("", help="region code: a village for village_office, a kecamatan for kecamatan"),
            program: list[str] = typer.Option([], help="program codes (program managers), repeatable"),
            password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password from stdin"),
            file: Path | None = file_opt) -> None:
        """Create an account; asks for the password (never on the command line)."""
        import sys
        pw = sys.stdin.readline().rstrip("\n") if password_stdin else typer.prompt(
            "password", hide_input=True, confirmation_prompt=True)
        u = _run(lambda: _file(file).add(username, pw, role, area, program))
        out.print(f"[green]added {u.username} ({u.role.value}, area {u.area or 'whole regency'})")

    @users_app.command("list")
    def list_(file: Path | None = file_opt) -> None:
        """Accounts with role, area and state (no password hashes)."""
        accounts = _file(file)
        if not accounts.load():
            out.print(f"no staff accounts yet in {accounts.path}: create the first with "
                      "`sinergi users add NAME --role ROLE` (roles: " + ", ".join(Role) + ")")
            return
        t = Table("user", "role", "area", "programs", "state", "created")
        for u in accounts.load().values():
            t.add_row(u.username, u.role.value, u.area or "-", ",".join(u.programs) or "-",
                      "disabled" if u.disabled else "active", u.created_at.date().isoformat())
        Console().print(t)

    @users_app.command("disable")
    def disable(username: str, file: Path | None = file_opt) -> None:
        """Stop an account now: it cannot log in and its tokens stop working."""
        _run(lambda: _file(file).set_disabled(username, True))
        out.print(f"[yellow]disabled {username}")

    @users_app.command("enable")
    def enable(username: str, file: Path | None = file_opt) -> None:
        _run(lambda: _file(file).set_disabled(username, False))
        out.print(f"[green]enabled {username}")

    @users_app.command("password")
    def password(username: str, password_stdin: bool = typer.Option(False, "--password-stdin"),
                 file: Path | None = file_opt) -> None:
        """Set a new password."""
        import sys
        pw = sys.stdin.readline().rstrip("\n") if password_stdin else typer.prompt(
            "new password", hide_input=True, confirmation_prompt=True)
        _run(lambda: _file(file).set_password(username, pw))
        out.print(f"[green]password changed for {username}")
