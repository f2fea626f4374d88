"""With certificates in the deployment config, nats-server speaks TLS 1.2 or newer only:
plaintext clients and TLS 1.0/1.1 are refused. A throwaway CA and server certificate are made
with `cryptography` for the run."""
from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.natsdeploy import CONFIG, Deployed, Party

pytestmark = pytest.mark.integration


def _cert(subject: str, issuer_key, issuer_name, key, *, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_pki(d: Path) -> dict[str, Path]:
    ca_key, srv_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Sinergi test CA")])
    ca = _cert("Sinergi test CA", ca_key, ca_name, ca_key, ca=True)
    srv = _cert("localhost", ca_key, ca_name, srv_key, ca=False)
    pem = serialization.Encoding.PEM
    paths = {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server-key.pem"}
    paths["ca"].write_bytes(ca.public_bytes(pem))
    paths["cert"].write_bytes(srv.public_bytes(pem))
    paths["key"].write_bytes(srv_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    return paths


@pytest.fixture(scope="module")
def tls_deployed():
    root = Path(tempfile.mkdtemp(prefix="sinergi-tls-"))
    pki = make_pki(root)
    d = Deployed(root, {**CONFIG, "tls": {"cert": str(pki["cert"]), "key": str(pki["key"])}}).start()
    d.ca = pki["ca"]
    yield d
    d.stop()


def _context(d: Deployed, version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(d.ca))
    ctx.minimum_version = ctx.maximum_version = version
    if version < ssl.TLSVersion.TLSv1_2:
        ctx.set_ciphers("ALL:@SECLEVEL=0")  # let the client offer old TLS so the server is the one refusing
    return ctx


def _info(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        data += sock.recv(4096)
    return data


def test_config_names_certificates_and_minimum_version(tls_deployed):
    conf = tls_deployed.conf.read_text()
    assert 'min_version: "1.2"' in conf and "server.pem" in conf and "server-key.pem" in conf
    assert (tls_deployed.root / "out" / "credentials" / "agency-pkh.env").read_text().count("NATS_URL=tls://") == 1


def test_plaintext_client_is_refused(tls_deployed):
    with socket.create_connection(("127.0.0.1", tls_deployed.port), timeout=5) as s:
        info = _info(s)
        assert b'"tls_required":true' in info
        s.sendall(b'CONNECT {"user":"agency-pkh","pass":"' + tls_deployed.passwords["agency-pkh"].encode()
                  + b'","verbose":false}\r\nPING\r\n')
        got = b""
        try:
            while chunk := s.recv(4096):
                got += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        assert b"PONG" not in got  # the server wants a TLS handshake and closes the connection


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_below_1_2_is_refused(tls_deployed, version):
    with socket.create_connection(("127.0.0.1", tls_deployed.port), timeout=5) as s:
        _info(s)
        with pytest.raises(ssl.SSLError) as exc:
            _context(tls_deployed, version).wrap_socket(s, server_hostname="localhost")
    # the server's alert, not a client-side refusal to offer the version
    assert "PROTOCOL_VERSION" in str(exc.value).upper(), exc.value


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_tls_1_2_and_1_3_work_with_the_generated_credentials(tls_deployed, version):
    party = await Party("agency-pkh").connect(tls_deployed, tls=_context(tls_deployed, version))
    try:
        assert await party.may_publish("agency.pkh.enrolments")
        assert not await party.may_publish("agency.kamalia.enrolments")
    finally:
        await party.close()
