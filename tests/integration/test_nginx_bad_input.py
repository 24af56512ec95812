"""Bad input to the nginx role (through site.yml, as an operator runs it) fails
with a clear message before anything on the host changes."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.targets import refuse_all


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> dict[str, Path]:
    """On the controller: a self-signed certificate, its key, and another key."""
    directory = tmp_path_factory.mktemp("nginx-tls")
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ytempire.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    files = {"cert": directory / "site.crt", "key": directory / "site.key"}
    files["other_key"] = directory / "other.key"
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for path, private in ((files["key"], key), (files["other_key"], other)):
        path.write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return files


CASES = {
    "certificate without its key": (
        lambda f: {"nginx_tls_certificate": str(f["cert"])},
        "nginx_tls_certificate ('{cert}') and nginx_tls_certificate_key ('') go together",
    ),
    "key without its certificate": (
        lambda f: {"nginx_tls_certificate_key": str(f["key"])},
        "nginx_tls_certificate ('') and nginx_tls_certificate_key ('{key}') go together",
    ),
    "certificate that is not on the controller": (
        lambda f: {
            "nginx_tls_certificate": "/nonexistent/site.crt",
            "nginx_tls_certificate_key": str(f["key"]),
        },
        "nginx_tls_certificate is '/nonexistent/site.crt', which is not a file on the controller",
    ),
    "certificate made for another key": (
        lambda f: {
            "nginx_tls_certificate": str(f["cert"]),
            "nginx_tls_certificate_key": str(f["other_key"]),
        },
        "The certificate {cert} was not made for the key {other_key} (their public keys differ)",
    ),
    "port out of range": (
        lambda f: {"nginx_https_port": 70000},
        "Invalid port: nginx_https_port is 70000; it must be a number from 1 to 65535.",
    ),
    "two listeners on one port": (
        lambda f: {"nginx_api_port": 443},
        "name the same port (80, 443, 443, 8081, 8082, 3000, 5678): nginx cannot listen twice",
    ),
    "listener on an upstream's port": (
        lambda f: {"nginx_api_port": 8082},
        "name the same port (80, 443, 8082, 8081, 8082, 3000, 5678)",
    ),
    "body size nginx cannot read": (
        lambda f: {"nginx_client_max_body_size": "10XB"},
        "Invalid nginx_client_max_body_size '10XB': give a number of bytes, optionally with k, m "
        "or g",
    ),
    "unknown first color": (
        lambda f: {"nginx_api_initial_color": "purple"},
        "nginx_api_initial_color",
    ),
    "site file outside sites-available": (
        lambda f: {"nginx_site_file": "/etc/ytempire.conf"},
        "nginx_site_file (/etc/ytempire.conf) must be a file of /etc/nginx/sites-available",
    ),
}


@pytest.fixture(scope="module")
def refusals(fresh_host, tls_files):
    """site.yml run once for all the cases, each a name of the host with its variables."""
    cases = {case: make_vars(tls_files) for case, (make_vars, _) in CASES.items()}
    return refuse_all(fresh_host, "site.yml", cases)


@pytest.mark.docker
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_refused_before_change(refusals, tls_files, case):
    names = {k: str(v) for k, v in tls_files.items()}
    refusals.assert_refused(case, CASES[case][1].format(**names))
