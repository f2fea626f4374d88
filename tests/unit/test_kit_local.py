"""kit.local: what `sinergi up` generates in its data dir, and how a command finds the system
(which data dir, which settings, which NATS identity), and the one-line errors of `sinergi`."""
from __future__ import annotations

import asyncio
import json
import os
import stat
import time

import pytest

from services.cli import explain
from services.kit import local
from services.kit.embedded import free_port
from services.kit.local import LocalSystem, NoSystem, Unreachable
from services.kit.settings import SERVICES
from services.kit.users import UsersFile


@pytest.fixture(autouse=True)
def no_data_dir_given(monkeypatch):
    monkeypatch.delenv("SINERGI_NATS_URL", raising=False)
    monkeypatch.delenv("SINERGI_DATABASE_URL", raising=False)
    local.choose(None)
    yield
    local.choose(None)


def running(system: LocalSystem, pid: int | None = None) -> dict:
    ep = {"nats": "nats://127.0.0.1:14999", "database": "postgresql+asyncpg://postgres:@/postgres?host=/x/pg",
          "http_port_base": 18001, "nats_users": True, "pid": pid or os.getpid(),
          "services": {s: {"url": f"http://127.0.0.1:{18001 + i}", "pid": 1} for i, s in enumerate(SERVICES)}}
    system.endpoints_file.write_text(json.dumps(ep))
    return ep


def test_first_start_generates_every_secret_once_owner_only(tmp_path):
    system, created = LocalSystem.create(tmp_path / "d")
    assert created
    before = {p: p.read_bytes() for p in system.secrets_dir.rglob("*") if p.is_file()}
    assert len(before) == 3 + len(local.identities())
    for path in [*before, system.users_file]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(system.secrets_dir.stat().st_mode) == 0o700
    assert len(system.auth_secret) >= 32 and len({system.nats_password(i.user) for i in local.identities()}) == 6
    again, created = LocalSystem.create(tmp_path / "d")  # a later start keeps them all
    assert not created and {p: p.read_bytes() for p in before} == before


def test_staff_accounts_file_keeps_its_owner_only_mode(tmp_path):
    system, _ = LocalSystem.create(tmp_path)
    UsersFile(system.users_file).add("ani", "kata-sandi-panjang-1", "village_office", "3317012001")
    assert stat.S_IMODE(system.users_file.stat().st_mode) == 0o600
    other = tmp_path / "deploy-users.yaml"  # a deployment's file, written fresh: group-readable as before
    UsersFile(other).add("ani", "kata-sandi-panjang-1", "village_office", "3317012001")
    assert stat.S_IMODE(other.stat().st_mode) == 0o640


def test_nats_auth_holds_bcrypt_hashes_and_the_permissions(tmp_path):
    system, _ = LocalSystem.create(tmp_path)
    text = system.write_nats_auth().read_text()
    assert stat.S_IMODE(system.nats_auth_file.stat().st_mode) == 0o600
    assert text.count('"$2b$') == len(local.identities())
    assert not any(system.nats_password(i.user) in text for i in local.identities())
    assert '"svc-registry"' in text and '"operator"' in text and '"ops"' in text


def test_operator_may_enrol_read_receipts_and_audit_but_never_delete_a_stream():
    op = local.operator()
    assert "agency.*.enrolments" in op.publish and "agency.*.receipts" in op.subscribe
    assert "agency.*.proposals" in op.subscribe  # an agency's forwarded proposals (issue 17)
    assert "$JS.API.CONSUMER.CREATE.DISBURSEMENT" in op.publish  # audit verify's ordered consumer
    assert not any(".STREAM.DELETE." in s or ".STREAM.PURGE." in s for s in op.publish)
    assert op.subscribe[0] == "_INBOX.operator.>"
    for ident in local.identities():
        if ident.kind == "service":  # no service receives the operator's replies
            assert "_INBOX.operator.>" in ident.subscribe_deny


def test_each_service_gets_its_own_identity_and_only_disbursement_the_keys(tmp_path):
    system, _ = LocalSystem.create(tmp_path)
    where = {"nats_url": "nats://127.0.0.1:1", "database_url": "postgresql://x@/y", "http_port_base": 9001}
    envs = {s: system.service_env(s, **where, nats_users=True) for s in SERVICES}
    for svc, env in envs.items():
        assert env["SINERGI_NATS_USER"] == f"svc-{svc}"
        assert env["SINERGI_NATS_PASSWORD"] == system.nats_password(f"svc-{svc}")
        assert env["SINERGI_AUTH_SECRET"] == system.auth_secret
        assert env["SINERGI_USERS_FILE"] == str(system.users_file)
        assert ("SINERGI_DISBURSEMENT_PSEUDONYM_KEY" in env) is (svc == "disbursement")
    assert envs["disbursement"]["SINERGI_DISBURSEMENT_SIGNING_KEY_FILE"] == str(system.signing_key_file)
    own = system.service_env("registry", **where, nats_users=False)  # a NATS of one's own: its own credentials
    assert "SINERGI_NATS_USER" not in own and "SINERGI_NATS_PASSWORD" not in own


def test_a_command_uses_the_folder_it_runs_in_unless_the_environment_names_servers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert local.current() is None
    (tmp_path / ".sinergi" / "disbursement").mkdir(parents=True)  # another tool's files: not a system
    assert local.current() is None
    system, _ = LocalSystem.create(tmp_path / ".sinergi")
    assert local.current() == system
    ep = running(system)
    s = local.settings()
    assert (s.nats_url, s.database_url, s.http_port_base) == (ep["nats"], ep["database"], 18001)
    assert (s.nats_user, s.nats_password) == ("operator", system.nats_password("operator"))
    assert s.auth_secret == system.auth_secret and s.users_file == str(system.users_file)
    assert local.settings("svc-reporting").nats_user == "svc-reporting"
    assert local.service_url("disbursement") == "http://127.0.0.1:18003"
    assert local.users_file() == system.users_file

    monkeypatch.setenv("SINERGI_NATS_URL", "nats://nats.example:4222")  # production settings win over ./.sinergi
    assert local.current() is None and local.settings().nats_url == "nats://nats.example:4222"
    local.choose(tmp_path / ".sinergi")  # ... but not over a data dir given on purpose
    assert local.settings().nats_url == ep["nats"]


def test_no_running_system_is_one_clear_error(tmp_path):
    system, _ = LocalSystem.create(tmp_path / "d")
    local.choose(tmp_path / "d")
    with pytest.raises(NoSystem, match="not running in .*scripts/up"):
        local.settings()
    running(system, pid=2 ** 22 + 12345)  # `sinergi up` killed: its endpoints.json stayed behind
    with pytest.raises(NoSystem, match="gone without cleaning up"):
        local.settings()
    local.choose(tmp_path / "empty")
    with pytest.raises(NoSystem, match="secrets/auth-secret is missing"):
        LocalSystem(tmp_path / "empty").auth_secret  # noqa: B018


def test_a_command_gives_up_on_nats_within_seconds(tmp_path, capsys):
    from services.kit.settings import Settings

    settings = Settings(nats_url=f"nats://127.0.0.1:{free_port()}", _env_file=None)
    started = time.monotonic()
    with pytest.raises(Unreachable, match="cannot reach NATS at .*ConnectionRefusedError.*scripts/up"):
        asyncio.run(local.connect(settings, "test"))
    assert time.monotonic() - started < 10
    assert "Traceback" not in capsys.readouterr().err  # nats-py's per-attempt tracebacks are kept quiet


def test_known_failures_become_one_line_and_bugs_keep_their_traceback(tmp_path, monkeypatch):
    from nats.js.errors import NoStreamResponseError

    monkeypatch.chdir(tmp_path)
    assert explain(NoSystem("Sinergi is not running in /x")) == "Sinergi is not running in /x"
    assert "no JetStream stream" in explain(NoStreamResponseError()) and "migrate" in explain(NoStreamResponseError())
    refused = explain(ConnectionRefusedError(111, "Connect call failed"))
    assert refused.startswith("cannot reach PostgreSQL at postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    assert "scripts/up" in refused
    assert explain(FileNotFoundError(2, "No such file or directory", "x.csv")) == "No such file or directory: x.csv"
    assert explain(ValueError("a bug")) is None
    assert explain(ExceptionGroup("g", [NoSystem("inside a task group")])) == "inside a task group"


def test_a_mistyped_data_dir_is_not_created(tmp_path):
    local.choose(tmp_path / "typo")
    with pytest.raises(NoSystem, match="no Sinergi data dir at"):
        local.users_file()
    assert not (tmp_path / "typo").exists()
