"""The nginx role on a real systemd host, with stand-ins for the stack's upstreams
(tests/integration/files/nginx_upstream.py on 127.0.0.1:8081, 8082, 3000 and
5678), seen from a client on the same network: the redirect, TLS, the routes,
the body limit, the upstream file the deploy owns, a bad configuration that
never goes live, the auth-failure jail, and a second run that changes nothing."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.support.targets import ROOT, Target, start_target, stop_target

PLAYBOOK = "tests/integration/nginx.yml"
UPSTREAMS = {"green": 8081, "blue": 8082, "frontend": 3000, "n8n": 5678}
UPSTREAM_FILE = "/etc/nginx/ytempire/upstream-api.conf"
SITE_FILE = "/etc/nginx/sites-available/ytempire"
JAIL = "ytempire-nginx-auth"
MAXRETRY = 3
# A jail of security's own with a filter, too: on a fresh host the filter is tested
# together with security's jail file (common's fail2ban_file), which replaces
# Debian's sshd jail whose auth.log does not exist.
SECURITY_JAIL = {
    "name": "ytempire-test",
    "journalmatch": "_SYSTEMD_UNIT=ytempire-test.service",
}
SECURITY_FILTER = {
    "name": "ytempire-test",
    "content": "[Definition]\nfailregex = ^refused <HOST>$\n",
}
VARS = {
    "nginx_client_max_body_size": "1m",
    "nginx_fail2ban_maxretry": MAXRETRY,
    "security_fail2ban_jails": [SECURITY_JAIL],
    "security_fail2ban_filters": [SECURITY_FILTER],
}

pytestmark = pytest.mark.docker


def recap_changed(output: str) -> int:
    return sum(int(n) for n in re.findall(r"changed=(\d+)", output))


@pytest.fixture(scope="module")
def hosts() -> Iterator[tuple[Target, Target]]:
    suffix = uuid.uuid4().hex[:8]
    network = f"ytempire-pytest-nginx-{suffix}"
    server = client = None
    try:
        server = start_target(f"ytempire-pytest-nginx-{suffix}", network)
        client = start_target(f"ytempire-pytest-nginx-client-{suffix}", network)
        yield server, client
    finally:
        for target in (client, server):
            if target:
                stop_target(target)
        subprocess.run(["docker", "network", "rm", network], capture_output=True, check=False)


@pytest.fixture(scope="module")
def server(hosts) -> Target:
    target = hosts[0]
    script = ROOT / "tests/integration/files/nginx_upstream.py"
    subprocess.run(
        ["docker", "cp", str(script), f"{target.name}:/usr/local/bin/nginx_upstream.py"],
        check=True,
    )
    for name, port in UPSTREAMS.items():
        started = target.exec(
            "systemd-run",
            f"--unit=ytempire-test-upstream-{name}",
            "python3",
            "/usr/local/bin/nginx_upstream.py",
            name,
            str(port),
        )
        assert started.returncode == 0, started.stderr
    return target


@pytest.fixture(scope="module")
def client(hosts) -> Target:
    target = hosts[1]
    installed = target.exec(
        "sh", "-c", "apt-get update -q && apt-get install -y -q curl openssl > /dev/null"
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return target


@pytest.fixture(scope="module")
def converged(server, client) -> Target:
    """The playbook applied once (after the client is ready, which apt takes a while for),
    after check mode ran on the fresh host."""
    checked = server.playbook(PLAYBOOK, VARS, check=True)
    assert checked.returncode == 0, checked.stdout[-8000:] + checked.stderr
    assert "Check mode: nginx is not installed yet" in checked.stdout
    result = server.playbook(PLAYBOOK, VARS)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr
    return server


@pytest.fixture(scope="module")
def client_ip(client) -> str:
    return client.exec("hostname", "-I").stdout.split()[0]


def curl(client: Target, *args: str) -> subprocess.CompletedProcess[str]:
    return client.exec("curl", "--silent", "--insecure", "--max-time", "10", *args)


def fetch(client: Target, url: str, *args: str) -> dict:
    """What the upstream that answered saw (its JSON)."""
    answer = curl(client, "--fail", url, *args)
    assert answer.returncode == 0, f"{url}: curl exit {answer.returncode} {answer.stderr}"
    return json.loads(answer.stdout)


def banned(server: Target) -> str:
    return server.exec("fail2ban-client", "status", JAIL).stdout


def test_check_mode_on_the_converged_host_changes_nothing(converged):
    result = converged.playbook(PLAYBOOK, VARS, check=True)
    assert result.returncode == 0, result.stdout[-8000:]
    assert recap_changed(result.stdout) == 0, result.stdout[-8000:]


def test_jails_of_both_roles_run(converged):
    jails = converged.exec("fail2ban-client", "status").stdout
    assert JAIL in jails, jails
    assert "ytempire-test" in jails, jails
    assert "sshd" in jails, jails
    status = banned(converged)
    assert "/var/log/nginx/ytempire.access.log" in status
    assert converged.exec("fail2ban-client", "get", JAIL, "maxretry").stdout.strip() == "3"


def test_http_redirects_to_https_keeping_host_and_uri(converged, client):
    host = converged.name
    answer = curl(
        client, "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", f"http://{host}/a/b?c=1"
    )
    assert answer.stdout == f"301 https://{host}/a/b?c=1"


def test_tls_self_signed_with_the_hosts_names(converged, client):
    host = converged.name
    cert = client.exec(
        "sh",
        "-c",
        f"openssl s_client -connect {host}:443 -servername {host} </dev/null 2>/dev/null"
        " | openssl x509 -noout -subject -issuer -ext subjectAltName",
    ).stdout
    assert f"DNS:{host}" in cert
    server_ip = converged.exec("hostname", "-I").stdout.split()[0]
    assert f"IP Address:{server_ip}" in cert
    subject = re.search(r"subject=(.*)", cert).group(1)
    assert re.search(r"issuer=(.*)", cert).group(1) == subject, cert
    key = converged.exec("stat", "-c", "%a %U", "/etc/nginx/ytempire/tls/ytempire.key").stdout
    assert key.strip() == "600 root"


def test_old_tls_versions_refused(converged, client):
    old = client.exec(
        "sh", "-c", f"openssl s_client -tls1_1 -connect {converged.name}:443 </dev/null"
    )
    assert old.returncode != 0


def test_https_headers_http2_and_no_version(converged, client):
    answer = curl(client, "--http2", "-D", "-", "-o", "/dev/null", f"https://{converged.name}/")
    headers = answer.stdout.lower()
    assert headers.startswith("http/2 200"), answer.stdout
    assert "strict-transport-security: max-age=63072000" in headers
    assert "x-request-id: " in headers
    assert re.search(r"^server: nginx\r?$", headers, re.M), answer.stdout


def test_routes_reach_their_upstreams(converged, client, client_ip):
    base = f"https://{converged.name}"
    assert fetch(client, f"{base}/")["upstream"] == "frontend"
    api = fetch(client, f"{base}/api/v1/videos?page=2")
    assert (api["upstream"], api["path"]) == ("blue", "/api/v1/videos?page=2")
    assert fetch(client, f"{base}/health")["upstream"] == "blue"
    n8n = fetch(client, f"{base}/n8n/rest/settings")
    # n8n serves at / (N8N_PATH only prefixes the URLs it writes): the prefix is stripped.
    assert (n8n["upstream"], n8n["path"]) == ("n8n", "/rest/settings")
    headers = api["headers"]
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-for"] == client_ip
    assert headers["x-real-ip"] == client_ip
    assert headers["host"] == converged.name
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])
    given = fetch(
        client, f"{base}/api/x", "-H", "X-Request-ID: trace-42", "-H", "X-Forwarded-For: 1.2.3.4"
    )
    assert given["headers"]["x-request-id"] == "trace-42"
    assert given["headers"]["x-forwarded-for"] == client_ip


def test_n8n_gets_the_websocket_upgrade(converged, client):
    seen = fetch(
        client,
        f"https://{converged.name}/n8n/rest/push",
        "--http1.1",
        "-H",
        "Upgrade: websocket",
        "-H",
        "Connection: Upgrade",
    )
    assert seen["headers"]["upgrade"] == "websocket"
    assert seen["headers"]["connection"].lower() == "upgrade"
    plain = fetch(client, f"https://{converged.name}/n8n/")
    assert "upgrade" not in plain["headers"]


def test_api_port_is_tls_and_reaches_the_active_color(converged, client):
    seen = fetch(client, f"https://{converged.name}:8080/api/v1/jobs")
    assert (seen["upstream"], seen["path"]) == ("blue", "/api/v1/jobs")
    plain = curl(client, "-o", "/dev/null", "-w", "%{http_code}", f"http://{converged.name}:8080/")
    assert plain.stdout == "400", "plain HTTP on the API port must be refused"


def test_body_limit(converged, client):
    url = f"https://{converged.name}/api/upload"
    make = "head -c {} /dev/zero > /tmp/body"
    client.exec("sh", "-c", make.format(512 * 1024))
    accepted = fetch(client, url, "--data-binary", "@/tmp/body")
    assert accepted["received"] == 512 * 1024
    client.exec("sh", "-c", make.format(2 * 1024 * 1024))
    refused = curl(
        client, "-o", "/dev/null", "-w", "%{http_code}", "--data-binary", "@/tmp/body", url
    )
    assert refused.stdout == "413"


def test_bad_directive_never_goes_live(converged, client):
    before = converged.exec("sha256sum", SITE_FILE).stdout
    result = converged.playbook(
        PLAYBOOK, {**VARS, "nginx_extra_directives": ["no_such_directive on;"]}
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    assert 'unknown directive "no_such_directive"' in output, output[-4000:]
    assert converged.exec("sha256sum", SITE_FILE).stdout == before
    assert converged.exec("nginx", "-t").returncode == 0
    assert fetch(client, f"https://{converged.name}/health")["upstream"] == "blue"


def test_upstream_file_is_the_deploys_after_the_first_run(converged, client):
    # As the deploy switches colors: the file rewritten, checked, nginx reloaded.
    switched = converged.exec(
        "sh",
        "-c",
        f"sed 's/127.0.0.1:8082/127.0.0.1:8081/' {UPSTREAM_FILE} > /tmp/upstream.conf"
        f" && ytempire-nginx-check /tmp/upstream.conf {UPSTREAM_FILE}"
        f" && cp /tmp/upstream.conf {UPSTREAM_FILE} && systemctl reload nginx",
    )
    assert switched.returncode == 0, switched.stdout + switched.stderr
    time.sleep(1)
    assert fetch(client, f"https://{converged.name}/api/x")["upstream"] == "green"
    # The second run: it changes nothing, and keeps the deploy's color.
    result = converged.playbook(PLAYBOOK, VARS)
    assert result.returncode == 0, result.stdout[-8000:]
    assert recap_changed(result.stdout) == 0, result.stdout[-8000:]
    assert "server 127.0.0.1:8081;" in converged.exec("cat", UPSTREAM_FILE).stdout
    assert fetch(client, f"https://{converged.name}/api/x")["upstream"] == "green"
    assert fetch(client, f"https://{converged.name}:8080/health")["upstream"] == "green"


def test_repeated_auth_failures_ban_the_client(converged, client, client_ip):
    url = f"https://{converged.name}/n8n/rest/login-fail"
    try:
        for _ in range(MAXRETRY):
            assert curl(client, "-o", "/dev/null", "-w", "%{http_code}", url).stdout == "401"
        for _ in range(30):
            if client_ip in banned(converged):
                break
            time.sleep(1)
        assert client_ip in banned(converged), converged.exec(
            "sh",
            "-c",
            "journalctl -u fail2ban --no-pager -n 30; tail /var/log/nginx/ytempire.access.log",
        ).stdout
        # security's banaction (iptables-multiport): a chain ahead of UFW's in INPUT.
        rules = converged.exec("iptables", "-S").stdout
        assert f"-A f2b-{JAIL} -s {client_ip}/32 -j REJECT" in rules, rules
        assert f"--dports 80,443,8080 -j f2b-{JAIL}" in rules, rules
        blocked = curl(client, "--max-time", "3", "-o", "/dev/null", f"https://{converged.name}/")
        assert blocked.returncode != 0, "a banned client still reaches nginx"
    finally:
        converged.exec("fail2ban-client", "set", JAIL, "unbanip", client_ip)
    assert client_ip not in banned(converged)
    assert fetch(client, f"https://{converged.name}/")["upstream"] == "frontend"
