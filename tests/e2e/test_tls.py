"""https and wss: the server on a TLS endpoint with a certificate the test makes, used by urllib and
by autobahn-python."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import urllib.request
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.wampclient import WampClient


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def test_https_and_wss(start_server: Any, tmp_path: Path) -> None:
    key, cert = self_signed(tmp_path)
    server = start_server(listen=f"ssl:{{port}}:privateKey={key}:certKey={cert}:interface=127.0.0.1")
    assert server.http_url.startswith("https://")
    context = ssl.create_default_context(cafile=str(cert))
    with urllib.request.urlopen(server.http_url + "/index.html", context=context, timeout=10) as page:
        assert page.status == 200 and b"wsserver" in page.read()
    pem = cert.read_bytes()
    with WampClient(server.ws_url, trust_pem=pem) as subscriber, WampClient(server.ws_url, trust_pem=pem) as publisher:
        inbox = subscriber.subscribe("com.example.secure")
        publisher.publish("com.example.secure", "over wss")
        assert inbox.get() == (("over wss",), {})
