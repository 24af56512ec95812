"""What an operator would check by hand after the nginx role ran on the converged
server (the stack behind it), and what the client on the same network sees: the
only way in is nginx, over TLS."""

import re

import pytest

testinfra_hosts = ["ansible://ytempire"]

PUBLIC_PORTS = [80, 443, 8080]
# What the stack publishes, on 127.0.0.1 only: the API's green and blue colors,
# the frontend and n8n.
STACK_PORTS = (8081, 8082, 3000, 5678)
KEY = "/etc/nginx/ytempire/tls/ytempire.key"
UPSTREAM_FILE = "/etc/nginx/ytempire/upstream-api.conf"
JAIL = "ytempire-nginx-auth"
CURL = "curl --silent --insecure --max-time 10"


def listeners(host) -> dict[int, set[str]]:
    """Listening TCP ports and the addresses each is bound to."""
    found: dict[int, set[str]] = {}
    for line in host.check_output("ss -Htln").splitlines():
        address, _, port = line.split()[3].rpartition(":")
        found.setdefault(int(port), set()).add(address)
    return found


def test_nginx_runs_and_uses_the_site(host):
    service = host.service("nginx")
    assert service.is_running, host.check_output("journalctl -u nginx --no-pager -n 30")
    assert service.is_enabled
    assert host.file("/etc/nginx/sites-enabled/ytempire").linked_to == (
        "/etc/nginx/sites-available/ytempire"
    )
    assert not host.file("/etc/nginx/sites-enabled/default").exists
    effective = host.check_output("nginx -T 2>/dev/null")
    for expected in (
        "server_tokens off;",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        f"include {UPSTREAM_FILE};",
        "upstream ytempire_api {",
        "proxy_request_buffering off;",
        "client_max_body_size 5g;",
        "proxy_set_header X-Request-ID $ytempire_request_id;",
        "location /n8n/ {",
        "Strict-Transport-Security",
    ):
        assert expected in effective, expected


def test_upstream_file_names_a_color_of_the_api(host):
    upstream = host.file(UPSTREAM_FILE).content_string
    assert re.search(r"server 127\.0\.0\.1:808[12];", upstream), upstream


@pytest.mark.parametrize("port", PUBLIC_PORTS)
def test_nginx_listens_on_every_address(host, port):
    bound = listeners(host).get(port, set())
    assert "0.0.0.0" in bound, host.check_output("ss -Htlnp")  # noqa: S104  what nginx binds


def test_stack_listens_on_loopback_only(host, probe, target_ip):
    bound = listeners(host)
    for port in STACK_PORTS:
        assert bound.get(port, set()) <= {"127.0.0.1", "[::1]"}, (port, bound.get(port))
        assert probe(target_ip, port) != "open", port


def test_tls_key_is_roots_alone(host):
    key = host.file(KEY)
    assert (key.user, key.group, key.mode) == ("root", "root", 0o600)


def test_http_redirects_to_https(client, target_ip):
    answer = client.check_output(
        f"{CURL} -o /dev/null -w '%{{http_code}} %{{redirect_url}}' http://{target_ip}/x?y=1"
    )
    assert answer == f"301 https://{target_ip}/x?y=1"


@pytest.mark.parametrize("port", [443, 8080])
def test_tls_with_hsts_and_no_version(client, target_ip, port):
    headers = client.check_output(f"{CURL} -D - -o /dev/null https://{target_ip}:{port}/health")
    lowered = headers.lower()
    assert lowered.startswith("http/"), headers
    assert "strict-transport-security: max-age=" in lowered
    assert re.search(r"^server: nginx\r?$", lowered, re.M), headers
    plain = client.check_output(
        f"{CURL} -o /dev/null -w '%{{http_code}}' http://{target_ip}:{port}/"
    )
    assert plain in ("301", "400"), "plain HTTP must never reach an upstream"


def test_certificate_names_the_host(client, target_ip):
    cert = client.check_output(
        f"openssl s_client -connect {target_ip}:443 </dev/null 2>/dev/null"
        " | openssl x509 -noout -ext subjectAltName"
    )
    assert f"IP Address:{target_ip}" in cert


def test_auth_failure_jail_reads_the_access_log(host):
    status = host.check_output(f"fail2ban-client status {JAIL}")
    assert "/var/log/nginx/ytempire.access.log" in status
    assert host.check_output(f"fail2ban-client get {JAIL} maxretry") == "10"
