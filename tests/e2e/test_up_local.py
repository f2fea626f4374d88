"""The embedded default is a whole system (issue 13): `sinergi up` generates its secrets, NATS
users and staff accounts file under the data dir at the first start, says how to make the first
account and what the development default does not protect, runs NATS with one user per service
(as production does), runs the services from the installed package whatever the folder holds;
and every `sinergi` command run in that folder, or given --data-dir, finds the running system
with no environment variable, and fails in one line when it cannot.

One `sinergi up` for the module, started as a user does: the installed `sinergi` script, in a
project folder holding a `contracts/` export (which once shadowed the package), data in the
default ./.sinergi.
"""
from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import nats
import pytest

from services.kit.bus import connect_options
from services.kit.embedded import EmbeddedNats, free_port
from services.kit.local import identities
from services.kit.settings import SERVICES
from tests.e2e.support import Up, all_gone, free_port_base

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

SINERGI = str(Path(sys.executable).parent / "sinergi")  # the console script, as scripts/up runs it
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "enrolments.csv"
PASSWORD = "kata-sandi-panjang-1"


def clean_env(**extra: str) -> dict[str, str]:
    """No SINERGI_* at all: the commands must find the system by themselves."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SINERGI_")}
    return {**env, **extra}


def sinergi(*args: str, cwd: Path, input: str | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([SINERGI, *args], cwd=cwd, env=clean_env(**env), input=input, capture_output=True,
                          text=True, timeout=180)


def one_line_error(res: subprocess.CompletedProcess) -> str:
    """The command failed with exit 1 and said why in one line (its last), no traceback; a
    progress bar may come before it."""
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert lines and "Traceback" not in res.stderr, res.stderr
    assert all("0:00" in line for line in lines[:-1]), res.stderr  # only progress bars before it
    return lines[-1]


@pytest.fixture(scope="module")
def project(module_dir) -> Path:
    folder = module_dir
    # `sinergi contracts export contracts`: a folder named like the package, in the current folder
    res = subprocess.run([SINERGI, "contracts", "export", "contracts"], cwd=folder, env=clean_env(),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and (folder / "contracts" / "asyncapi.yaml").exists(), res.stderr
    (folder / "contracts" / "__init__.py").write_text("")  # as importable as it gets
    return folder


@pytest.fixture(scope="module")
def up(project: Path):
    running = Up(project / ".sinergi", project / "up.log", argv=[SINERGI, "up"], cwd=project)
    yield running
    code = running.interrupt()
    assert code == 0, running.output()
    all_gone(running.pids())


def test_first_start_generates_private_secrets_and_says_what_it_does_not_protect(up):
    data = up.data_dir
    secret_files = [data / "secrets" / n for n in ("auth-secret", "pseudonym-key", "audit-signing-key.pem")]
    secret_files += [data / "secrets" / "nats" / f"{i.user}.env" for i in identities()]
    for path in [*secret_files, data / "users.yaml", data / "nats" / "auth.conf"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for folder in (data / "secrets", data / "secrets" / "nats"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert b"BEGIN PRIVATE KEY" in (data / "secrets" / "audit-signing-key.pem").read_bytes()

    said = " ".join(up.output(tail=20000).split())
    assert f"{SINERGI} users add admin --role kabupaten" in said, said  # the exact command, ready to paste
    assert "It does not protect" in said and "no TLS" in said and "loopback only (127.0.0.1)" in said
    assert str(data / "secrets") in said
    # nothing secret on the terminal: no key, password or hash
    raw = up.output(tail=20000)
    values = [up.system.auth_secret, up.system.pseudonym_key, *(up.system.nats_password(i.user) for i in identities())]
    pem_body = (data / "secrets" / "audit-signing-key.pem").read_text().splitlines()[1]
    for value in [*values, pem_body, "$2b$"]:
        assert value not in raw


def test_nats_has_one_user_per_service_and_refuses_everyone_else(up):
    conf = (up.data_dir / "nats" / "nats.conf").read_text()
    assert "sync_interval: always" in conf and 'include "auth.conf"' in conf
    auth = (up.data_dir / "nats" / "auth.conf").read_text()
    assert auth.count('"$2b$') == len(identities())  # bcrypt hashes only
    assert not any(up.system.nats_password(i.user) in auth for i in identities())

    async def anonymous() -> list[BaseException]:
        seen: list[BaseException] = []

        async def remember(exc: Exception) -> None:
            seen.append(exc)
        with pytest.raises(nats.errors.NoServersError):
            await nats.connect(up.endpoints["nats"], max_reconnect_attempts=1, reconnect_time_wait=0.1,
                               error_cb=remember)
        return seen
    refused = asyncio.run(anonymous())
    assert refused and all("uthorization" in str(e) or isinstance(e, nats.errors.AuthorizationError)
                           for e in refused), refused

    async def reporting_tries_to_enrol() -> list[BaseException]:
        seen: list[BaseException] = []

        async def remember(exc: Exception) -> None:
            seen.append(exc)
        opts = connect_options(up.system.settings("svc-reporting"), "e2e-reporting")
        nc = await nats.connect(**opts, error_cb=remember)
        try:
            await nc.publish("agency.pkh.enrolments", b"{}")
            await nc.flush()
            await asyncio.sleep(0.5)
        finally:
            await nc.close()
        return seen
    assert any("permissions violation" in str(e).lower() for e in asyncio.run(reporting_tries_to_enrol()))

    for svc in SERVICES:  # each service process: its own NATS user, in the data dir, keys only where needed
        pid = up.endpoints["services"][svc]["pid"]
        env = dict(v.split("=", 1) for v in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in v)
        assert env["SINERGI_NATS_USER"] == f"svc-{svc}"
        assert env["SINERGI_NATS_PASSWORD"] == up.system.nats_password(f"svc-{svc}")
        assert env["SINERGI_USERS_FILE"] == str(up.data_dir / "users.yaml")
        assert ("SINERGI_DISBURSEMENT_PSEUDONYM_KEY" in env) is (svc == "disbursement")
        assert os.readlink(f"/proc/{pid}/cwd") == str(up.data_dir)


def test_commands_find_the_running_system_from_its_folder(up, project):
    # no account yet: a command that acts for one says what to do
    err = one_line_error(sinergi("cycle", "run", "pkh", "2026-01", "--dry-run", "--user", "budi", cwd=project))
    assert "no staff accounts yet" in err and "sinergi users add" in err

    res = sinergi("users", "add", "budi", "--role", "program_manager", "--program", "pkh", "--password-stdin",
                  cwd=project, input=PASSWORD + "\n")
    assert res.returncode == 0, res.stderr
    assert "budi" in sinergi("users", "list", cwd=project).stdout
    token = httpx.post(up.url("intake") + "/auth/token", data={"username": "budi", "password": PASSWORD}, timeout=10)
    assert token.status_code == 200, token.text  # the services read the accounts `users add` wrote

    # the installed package, not ./contracts: every valid row accepted (not dead-lettered)
    csv = project / "enrolments.csv"
    csv.write_bytes(EXAMPLE.read_bytes())
    res = sinergi("agency", "publish", str(csv), "--program", "pkh", cwd=project)
    assert res.returncode == 1, res.stderr  # three rows of the example are wrong on purpose
    assert "rjct.village_code.unknown" in res.stderr and "Traceback" not in res.stderr
    rejected = (project / "enrolments.rejected.csv").read_text().splitlines()
    assert len(rejected) == 1 + 3, rejected

    res = sinergi("audit", "public-key", cwd=project)
    assert res.returncode == 0 and res.stdout.startswith("-----BEGIN PUBLIC KEY-----"), res.stderr
    (project / "regency.pub").write_text(res.stdout)
    res = sinergi("audit", "verify", "--public-key", "regency.pub", "--json", cwd=project)
    assert res.returncode == 0 and json.loads(res.stdout)["ok"], res.stdout + res.stderr

    res = sinergi("migrate", cwd=project)
    assert res.returncode == 0 and "stream checked DISBURSEMENT" in res.stderr, res.stderr
    res = sinergi("reporting", "recap", "2026-01", cwd=project)
    assert res.returncode == 0, res.stderr
    assert {p["programme_identifier"]: p["enrolled"] for p in json.loads(res.stdout)["programs"]} == {"pkh": 6}
    res = sinergi("privacy", "export", "3317011204510200", "--out", "person.json", cwd=project)
    assert res.returncode == 0, res.stderr
    assert json.loads((project / "person.json").read_text())["services"]["registry"]["people"]

    # the cycle runs as the account it names (a token signed with the data dir's secret)
    err = one_line_error(sinergi("cycle", "run", "pkh", "2026-01", "--dry-run", "--user", "budi", cwd=project))
    assert err.startswith("404") and "pkh" in err, err  # the program has no rules yet: the service says so


def test_commands_elsewhere_find_it_with_data_dir(up, tmp_path):
    for how in (["--data-dir", str(up.data_dir)],):
        res = sinergi(*how, "users", "list", cwd=tmp_path)
        assert res.returncode == 0 and "budi" in res.stdout, res.stderr
    res = subprocess.run([SINERGI, "users", "list"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env=clean_env(SINERGI_DATA_DIR=str(up.data_dir)))
    assert res.returncode == 0 and "budi" in res.stdout, res.stderr
    res = sinergi("--data-dir", str(up.data_dir), "reporting", "recap", "2026-01", cwd=tmp_path)
    assert res.returncode == 0, res.stderr


def test_errors_are_one_line_saying_what_to_do(up, tmp_path):
    csv = tmp_path / "e.csv"
    csv.write_bytes(EXAMPLE.read_bytes())
    err = one_line_error(sinergi("--data-dir", str(tmp_path / "nothing"), "agency", "publish", str(csv), "-p", "pkh",
                                 cwd=tmp_path))
    assert "not running" in err and "scripts/up" in err
    err = one_line_error(sinergi("agency", "publish", str(csv), "-p", "pkh", cwd=tmp_path,
                                 SINERGI_NATS_URL=f"nats://127.0.0.1:{free_port()}"))
    assert "cannot reach NATS" in err and "ConnectionRefusedError" in err
    bare = EmbeddedNats(tmp_path / "bare").start()  # a NATS without Sinergi's streams
    try:
        err = one_line_error(sinergi("agency", "publish", str(csv), "-p", "pkh", cwd=tmp_path,
                                     SINERGI_NATS_URL=bare.url))
        assert "no JetStream stream" in err and "migrate" in err
        err = one_line_error(sinergi("audit", "verify", cwd=tmp_path, SINERGI_NATS_URL=bare.url))
        assert "stream" in err and "migrate" in err
    finally:
        bare.stop()
    err = one_line_error(sinergi("reporting", "recap", "2026-01", cwd=tmp_path,
                                 SINERGI_DATABASE_URL=up.endpoints["database"], SINERGI_DB_PREFIX="nothing_"))
    assert 'database "nothing_reporting" does not exist' in err and "migrate" in err
    err = one_line_error(sinergi("users", "list", cwd=tmp_path))
    assert "no users file" in err
    base = free_port_base()
    err = one_line_error(sinergi("cycle", "run", "pkh", "2026-01", "--token", "x", cwd=tmp_path,
                                 SINERGI_HTTP_PORT_BASE=str(base), SINERGI_NATS_URL="nats://127.0.0.1:1"))
    assert "cannot reach" in err and str(base + 2) in err
