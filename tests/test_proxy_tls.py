"""TLS from a certificate and key: the proxy serves HTTPS with them (issue 3)."""

from __future__ import annotations

import datetime
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx2 as httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness import ROOT, Daemon, Proxy


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_https_with_a_configured_certificate(
    shared_daemon: Daemon, make_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    proxy = make_proxy(shared_daemon.endpoint, LLMSERVER_TLS_CERT=str(cert), LLMSERVER_TLS_KEY=str(key))
    # Started by hand: Proxy.start waits on plain HTTP.
    proxy.proc = subprocess.Popen([sys.executable, "-m", "llmserver.commands.proxy"], env=proxy.env, cwd=ROOT)
    api_key = proxy.make_key("tls")
    url = f"https://localhost:{proxy.port}"
    with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=10) as http:
        deadline = time.monotonic() + 20
        while True:
            try:
                r = http.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {api_key}"})
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the HTTPS proxy did not come up"
                time.sleep(0.1)
        assert r.status_code == 200 and r.json()["data"][0]["id"] == "smollm2"
    with httpx.Client(timeout=5) as plain:
        try:
            answer = plain.get(f"http://127.0.0.1:{proxy.port}/healthz")
            assert answer.status_code == 400  # aiohttp refuses plain HTTP on the TLS port
        except httpx.HTTPError:
            pass  # or just closes the connection
