"""`sinergi contracts export`: JSON Schemas that accept real messages and reject bad ones, and
an AsyncAPI 3.0 document the official AsyncAPI CLI accepts."""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import jsonschema
import pytest
import yaml

from contracts.agency import Receipt, ReceiptBatch, ReceiptStatus
from contracts.catalog import EVENTS
from contracts.envelope import envelope
from contracts.export import MESSAGES, export, stream_of
from contracts.registry import EnrolmentChange, EnrolmentsChanged
from contracts.subjects import event_subject
from tests import factories

ROOT = Path(__file__).resolve().parents[2]
ASYNCAPI = ROOT / ".tools" / "node_modules" / ".bin" / "asyncapi"


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("contracts")
    return out, export(out)


def _validator(path: Path) -> jsonschema.Draft202012Validator:
    schema = json.loads(path.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def test_every_catalog_event_has_a_schema_and_a_channel(exported):
    out, written = exported
    assert EVENTS, "the catalog found no events"
    doc = yaml.safe_load((out / "asyncapi.yaml").read_text())
    addresses = {ch["address"]: ch for ch in doc["channels"].values()}
    for event_type in EVENTS:
        path = out / "schemas" / "events" / f"{event_type}.json"
        assert path in written
        _validator(path)
        ch = addresses[event_subject(event_type)]
        assert ch["x-jetstream-stream"] == stream_of(event_subject(event_type)) is not None
        msg = doc["components"]["messages"][event_type]
        assert msg["payload"]["schema"]["$ref"] == f"schemas/events/{event_type}.json"
        ops = [o for o in doc["operations"].values() if o["channel"]["$ref"].endswith("/" + next(
            k for k, c in doc["channels"].items() if c["address"] == event_subject(event_type)))]
        assert [o["action"] for o in ops] == ["send"]
    for m in MESSAGES:
        assert (out / "schemas" / "messages" / f"{m.key}.json") in written
        assert m.key in doc["components"]["messages"]
    assert doc["asyncapi"].startswith("3.0") and doc["servers"]["production"]["protocol"] == "nats"


def test_event_schema_accepts_a_real_envelope_and_rejects_a_wrong_one(exported):
    out, _ = exported
    v = factories.village()
    nik = factories.nik(v, dt.date(1960, 7, 1), "F")
    change = EnrolmentChange(nik=nik, no_kk=factories.kk(v), village_code=v, birth_date=dt.date(1960, 7, 1),
                             programme_identifier="pkh", enrolment_status="active",
                             status_change_date=dt.date(2026, 1, 1), reported_by="pkh")
    other = change.model_copy(update={"programme_identifier": "kamalia_merekah"})
    env = envelope(EnrolmentsChanged(changes=[change, other]), "registry")
    good = json.loads(env.model_dump_json())
    val = _validator(out / "schemas" / "events" / "registry.enrolments_changed.json")
    assert list(val.iter_errors(good)) == []
    first, *rest = good["data"]["changes"]
    for broken in ({**good, "event_type": "registry.people_registered"},                     # const per file
                   {**good, "data": {"changes": [{**first, "nik": "12345"}, *rest]}},          # pattern
                   {**good, "data": {"changes": [{**first, "enrolment_status": "x"}, *rest]}},  # enum
                   {**good, "data": {"changes": []}},                                          # never empty
                   {**good, "data": first},                                                    # one, not a batch
                   {**good, "surprise": 1}):                                                   # extra forbidden
        assert list(val.iter_errors(broken)), broken


def test_message_schemas_accept_what_the_models_produce(exported):
    out, _ = exported
    r = Receipt(message_id="m1", programme_identifier="pkh", status=ReceiptStatus.succ,
                timestamp=dt.datetime.now(dt.UTC), correlation_id=str(uuid.uuid4()))
    batch = json.loads(ReceiptBatch(programme_identifier="pkh", receipts=[r]).model_dump_json())
    val = _validator(out / "schemas" / "messages" / "receipt_batch.json")
    assert list(val.iter_errors(batch)) == []
    assert list(val.iter_errors({**batch, "receipts": [{**batch["receipts"][0], "status": "ok"}]}))
    assert list(val.iter_errors({**batch, "receipts": []}))
    assert list(val.iter_errors(batch["receipts"][0]))  # a bare receipt is not what travels
    rep = _validator(out / "schemas" / "messages" / "enrolment_report.json")
    assert list(rep.iter_errors(factories.enrolment("pkh"))) == []
    assert list(rep.iter_errors({**factories.enrolment("pkh"), "sex": "X"}))


def test_stream_of_matches_the_stream_filters():
    assert stream_of("registry.events.people_registered") == "REGISTRY"
    assert stream_of("disbursement.payment_settled") == "DISBURSEMENT"
    assert stream_of("agency.{program}.enrolments") == "AGENCY_ENROLMENTS"
    assert stream_of("channel.{channel}.settlements") == "CHANNEL"
    assert stream_of("registry.lookup") is None


def _asyncapi_env(tmp: Path) -> dict:
    # the CLI phones home for metrics unless its config says no; keep it off the network and $HOME
    cfg = tmp / "asyncapi-analytics.json"
    cfg.write_text(json.dumps({"analyticsEnabled": "false", "infoMessageShown": "true", "userID": "sinergi-test"}))
    return {**os.environ, "ASYNCAPI_METRICS_CONFIG_PATH": str(cfg)}


@pytest.fixture(scope="module")
def asyncapi_cli() -> Path:
    """The official AsyncAPI CLI: the one .ci/prepare installed into .tools/, else one installed
    once into the user's cache, outside the work tree (a test must not write into the tree)."""
    if ASYNCAPI.exists():
        return ASYNCAPI
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sinergi" / "asyncapi-cli"
    cli = cache / "node_modules" / ".bin" / "asyncapi"
    if cli.exists():
        return cli
    if not shutil.which("npm") or not shutil.which("node"):
        pytest.skip("node/npm missing: cannot run the official AsyncAPI CLI (.ci/prepare installs it into .tools/)")
    try:
        subprocess.run(["npm", "install", "--prefix", str(cache), "--no-audit", "--no-fund", "--loglevel=error",
                        "@asyncapi/cli@4"], check=True, capture_output=True, text=True, timeout=600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        tail = (getattr(exc, "stderr", "") or "").strip().splitlines()[-1:]
        pytest.skip(f"could not install @asyncapi/cli into {cache} ({' '.join(tail) or exc}); .ci/prepare "
                    "installs it into .tools/")
    return cli


def test_asyncapi_document_passes_the_official_cli(exported, asyncapi_cli, tmp_path):
    out, _ = exported
    res = subprocess.run([str(asyncapi_cli), "validate", str(out / "asyncapi.yaml")], capture_output=True,
                         text=True, timeout=120, env=_asyncapi_env(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "is valid" in res.stdout + res.stderr


def test_the_cli_rejects_a_broken_reference(exported, asyncapi_cli, tmp_path):
    """The validation above can fail: a payload pointing at a missing schema file is an error."""
    out, _ = exported
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    doc = broken / "asyncapi.yaml"
    doc.write_text(doc.read_text().replace("schemas/messages/receipt_batch.json", "schemas/messages/missing.json"))
    res = subprocess.run([str(asyncapi_cli), "validate", str(doc)], capture_output=True, text=True, timeout=120,
                         env=_asyncapi_env(tmp_path))
    assert res.returncode != 0 and "missing.json" in res.stdout + res.stderr


def test_the_sinergi_command_writes_the_same_files(tmp_path):
    res = subprocess.run([sys.executable, "-m", "services.cli", "contracts", "export", str(tmp_path / "out")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out" / "asyncapi.yaml").exists()
    assert len(list((tmp_path / "out" / "schemas" / "events").glob("*.json"))) == len(EVENTS)
