"""`sinergi deploy init`: input checks, fresh strong credentials, nothing secret in the clear."""
from __future__ import annotations

import re
import stat
from pathlib import Path

import bcrypt
import pytest
import typer
from typer.testing import CliRunner

from services.cli import app
from services.kit import deploy

GOOD = {"regency": "33.17", "programs": [{"code": "pkh", "agency": "Kemensos"}], "channels": ["bri"]}


@pytest.fixture(autouse=True)
def _cheap_bcrypt(monkeypatch):
    monkeypatch.setattr(deploy, "BCRYPT_COST", 4)  # the cost is not under test; hashes still verify


def _env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


@pytest.mark.parametrize("bad, problem", [
    ({**GOOD, "regency": "99.99"}, "not a known kabupaten"),
    ({**GOOD, "regency": "3317010001"}, "not a known kabupaten"),
    ({**GOOD, "programs": [{"code": "pkh.x", "agency": "A"}]}, "pattern"),
    ({**GOOD, "programs": [{"code": "*", "agency": "A"}]}, "pattern"),
    ({**GOOD, "programs": [{"code": "pkh", "agency": "A"}, {"code": "pkh", "agency": "B"}]}, "unique"),
    ({**GOOD, "programs": []}, "at least 1"),
    ({**GOOD, "channels": ["bri", "b>"]}, "one subject token"),
])
def test_bad_config_is_refused_with_the_reason(tmp_path, bad, problem):
    import yaml
    f = tmp_path / "r.yaml"
    f.write_text(yaml.safe_dump(bad))
    with pytest.raises(typer.BadParameter) as exc:
        deploy.load_config(f)
    assert problem in str(exc.value)


def test_credentials_are_fresh_strong_and_only_hashed_in_the_server_config(tmp_path):
    cfg = deploy.DeployConfig.model_validate(GOOD)
    first = deploy.generate(cfg, tmp_path / "a")
    second = deploy.generate(cfg, tmp_path / "b")
    assert set(first) == {"svc-intake", "svc-registry", "svc-disbursement", "svc-reporting", "agency-pkh",
                          "dukcapil", "channel-bri", "auditor-inspektorat", "ops"}
    assert not set(first.values()) & set(second.values())  # fresh every run
    assert len(set(first.values())) == len(first) and all(len(p) >= 40 for p in first.values())
    auth = (tmp_path / "a" / "nats" / "auth.conf").read_text()
    hashes = dict(re.findall(r'user: "([^"]+)"\n\s+password: "([^"]+)"', auth))
    for user, password in first.items():
        assert password not in auth
        assert bcrypt.checkpw(password.encode(), hashes[user].encode())
        creds = _env(tmp_path / "a" / "credentials" / f"{user}.env")
        assert creds["NATS_USER"] == user and creds["NATS_PASSWORD"] == password
        assert creds["NATS_INBOX_PREFIX"] == f"_INBOX.{user}"
    env = _env(tmp_path / "a" / ".env")
    assert len(env["SINERGI_AUTH_SECRET"]) >= 64 and env["SINERGI_AUTH_SECRET"] != _env(tmp_path / "b" / ".env")[
        "SINERGI_AUTH_SECRET"]
    assert env["SINERGI_ENV"] == "production" and len(env["POSTGRES_PASSWORD"]) >= 40
    assert env["NATS_REGISTRY_PASSWORD"] == first["svc-registry"] and env["NATS_OPS_PASSWORD"] == first["ops"]
    for secret in [tmp_path / "a" / ".env", tmp_path / "a" / "nats" / "auth.conf",
                   *(tmp_path / "a" / "credentials").iterdir()]:
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret


def test_an_existing_deployment_is_not_overwritten_without_force(tmp_path):
    cfg = deploy.DeployConfig.model_validate(GOOD)
    deploy.generate(cfg, tmp_path)
    with pytest.raises(FileExistsError):
        deploy.generate(cfg, tmp_path)
    deploy.generate(cfg, tmp_path, force=True)


def test_update_adds_and_removes_parties_keeping_existing_credentials(tmp_path):
    first = deploy.generate(deploy.DeployConfig.model_validate(GOOD), tmp_path)
    env1 = _env(tmp_path / ".env")
    more = {**GOOD, "programs": [*GOOD["programs"], {"code": "kamalia", "agency": "Dinsos"}], "channels": []}
    second = deploy.generate(deploy.DeployConfig.model_validate(more), tmp_path, update=True)
    assert second["agency-pkh"] == first["agency-pkh"] and second["svc-registry"] == first["svc-registry"]
    assert "agency-kamalia" in second and "channel-bri" not in second
    assert not (tmp_path / "credentials" / "channel-bri.env").exists()
    assert (tmp_path / "credentials" / "agency-kamalia.env").exists()
    env2 = _env(tmp_path / ".env")
    assert env2["SINERGI_AUTH_SECRET"] == env1["SINERGI_AUTH_SECRET"]
    assert env2["POSTGRES_PASSWORD"] == env1["POSTGRES_PASSWORD"]
    assert 'user: "channel-bri"' not in (tmp_path / "nats" / "auth.conf").read_text()


def test_cluster_flag_sets_three_replicas_and_the_profile(tmp_path):
    deploy.generate(deploy.DeployConfig.model_validate({**GOOD, "cluster": True}), tmp_path)
    env = _env(tmp_path / ".env")
    assert env["COMPOSE_PROFILES"] == "cluster" and env["SINERGI_STREAM_REPLICAS"] == "3"
    assert env["NATS_CONFIG"] == "nats-1.conf"
    # the services get every node, so they start and carry on whichever one is down
    assert env["SINERGI_NATS_URLS"] == "nats://nats:4222,nats://nats-2:4222,nats://nats-3:4222"


def test_cli_writes_the_files_and_reports_bad_input(tmp_path):
    cfg = tmp_path / "regency.yaml"
    cfg.write_text("regency: '33.17'\nprograms: [{code: pkh, agency: Kemensos}]\n")
    r = CliRunner().invoke(app, ["deploy", "init", str(cfg), str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "nats" / "nats.conf").exists() and (tmp_path / "out" / "permissions.md").exists()
    r = CliRunner().invoke(app, ["deploy", "init", str(cfg), str(tmp_path / "out")])
    assert r.exit_code != 0 and "--force" in r.output
    cfg.write_text("regency: '33.17'\nprograms: [{code: PKH!, agency: Kemensos}]\n")
    r = CliRunner().invoke(app, ["deploy", "init", str(cfg), str(tmp_path / "out2")])
    assert r.exit_code != 0 and "programs.0.code" in r.output
