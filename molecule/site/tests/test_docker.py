"""What an operator would check by hand after the docker role ran, and what the
client on the same network (the scanner) sees of published ports."""

import json
import time

import pytest

testinfra_hosts = ["ansible://ytempire"]

REGISTRY = "localhost:5000"
# An image built on the target from the loaded registry image: it serves HTTP
# on whatever port REGISTRY_HTTP_ADDR names.
DOCKERFILE = (
    "FROM ytempire/registry:2\n"
    'LABEL com.ytempire.test="{label}"\n'
    'ENV REGISTRY_HTTP_ADDR=":{port}"\n'
)
ALLOWED_PORT = 8080  # security_firewall_rules routes it (route: true)
# Host nginx listens on 8080 itself: the container publishes it on another host
# port. A route rule names the container's port (DOCKER-USER sees the packet
# after Docker's DNAT), so the rule for 8080 still lets it through.
HOST_PORTS = {ALLOWED_PORT: 18080}
CLOSED_PORT = 9998  # no rule allows it (9999 is the security tests' listener)


def docker_json(host, fmt: str, *args: str):
    return json.loads(host.check_output(f"docker {' '.join(args)} --format '{{{{json {fmt}}}}}'"))


def build(host, tag: str, label: str, port: int = 5000) -> None:
    dockerfile = DOCKERFILE.format(label=label, port=port)
    host.check_output(f"printf '%s' '{dockerfile}' | docker build -q -t {tag} -")


@pytest.fixture(scope="module")
def applied(host) -> dict:
    """What the role recorded it applied (its local fact)."""
    return json.loads(host.file("/etc/ansible/facts.d/ytempire_docker.fact").content_string)


def test_engine_runs_the_pinned_branch_with_compose_v2_and_buildx(host, applied):
    docker = host.service("docker")
    assert docker.is_running, host.run("journalctl -u docker -n 30").stdout
    assert docker.is_enabled
    # 26.1 from the offline bundle on Debian, 24.0 from Docker's repository on Ubuntu.
    branch = {"offline": "26.1", "repository": "24.0"}[applied["install_source"]]
    assert applied["branch"] == branch
    assert docker_json(host, ".Server.Version", "version").startswith(branch + ".")
    assert host.check_output("docker compose version --short").startswith("2.")
    assert host.run("docker buildx version").rc == 0
    engine = {"offline": "docker.io", "repository": "docker-ce"}[applied["install_source"]]
    pinned = host.check_output(f"apt-cache policy {engine}").split("Version table:")[1]
    assert f" {branch}." in pinned or f":{branch}." in pinned
    assert " 1001\n" in pinned


def test_docker_info_reports_the_guides_settings(host):
    info = docker_json(host, ".", "info")
    assert info["Driver"] == "overlay2"
    assert info["LoggingDriver"] == "json-file"
    assert info["LiveRestoreEnabled"] is True
    assert info["CgroupDriver"] in ("cgroupfs", "systemd")
    assert "nvidia" not in info["Runtimes"], "no NVIDIA runtime on a host without the toolkit"


def test_daemon_json_is_owned_and_valid(host):
    daemon = host.file("/etc/docker/daemon.json")
    assert (daemon.user, daemon.mode) == ("root", 0o644)
    config = json.loads(daemon.content_string)
    assert config["log-opts"] == {"max-size": "100m", "max-file": "5"}
    assert config["default-ulimits"]["nofile"] == {"Name": "nofile", "Soft": 16384, "Hard": 16384}
    assert config["userland-proxy"] is False
    assert config["default-address-pools"] == [{"base": "10.210.0.0/16", "size": 24}]
    assert host.run("dockerd --validate --config-file /etc/docker/daemon.json").rc == 0


def test_containers_get_the_log_rotation_and_open_file_limit(host):
    pid = host.check_output("docker inspect -f '{{.State.Pid}}' ytempire-registry")
    limits = host.check_output(f"grep 'Max open files' /proc/{pid}/limits").split()
    assert limits[3:5] == ["16384", "16384"]
    log_config = docker_json(host, ".HostConfig.LogConfig", "inspect", "ytempire-registry")
    assert log_config["Type"] == "json-file"
    # The daemon's defaults, with no per-container override.
    assert log_config["Config"] == {"max-size": "100m", "max-file": "5"}


def test_metrics_listen_on_loopback_only(host):
    assert host.socket("tcp://127.0.0.1:9323").is_listening
    assert not host.socket("tcp://0.0.0.0:9323").is_listening
    metrics = host.check_output("curl -fsS http://127.0.0.1:9323/metrics")
    assert "engine_daemon_engine_info" in metrics


def test_a_locally_built_image_runs_as_a_container(host):
    build(host, "ytempire-test/web:local", "local")
    host.check_output(
        "docker rm -f web-local >/dev/null 2>&1; "
        "docker run -d --name web-local ytempire-test/web:local"
    )
    try:
        for _ in range(20):
            if docker_json(host, ".State.Running", "inspect", "web-local"):
                break
            time.sleep(0.5)
        ip = host.check_output(
            "docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' web-local"
        )
        assert ip.startswith("172.17."), ip
        assert (
            host.run(
                f"curl -fsS --retry 10 --retry-connrefused --retry-delay 1 http://{ip}:5000/v2/"
            ).rc
            == 0
        )
    finally:
        host.run("docker rm -f web-local")


def test_image_pushed_to_and_pulled_from_the_local_registry(host):
    image = f"{REGISTRY}/ytempire/pushed:1"
    build(host, image, "pushed")
    host.check_output(f"docker push {image}")
    host.check_output(f"docker image rm {image}")
    assert host.run(f"docker image inspect {image}").rc != 0
    host.check_output(f"docker pull {image}")
    catalog = json.loads(host.check_output(f"curl -fsS http://{REGISTRY}/v2/_catalog"))
    assert "ytempire/pushed" in catalog["repositories"]
    # The registry's data is on the host, where backups see it.
    assert host.file("/data/registry/docker/registry/v2/repositories/ytempire/pushed").is_directory


def test_registry_is_published_on_loopback_only(host):
    ports = docker_json(host, ".HostConfig.PortBindings", "inspect", "ytempire-registry")
    assert ports == {"5000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "5000"}]}
    assert (
        host.check_output(
            "docker inspect -f '{{.HostConfig.RestartPolicy.Name}}' ytempire-registry"
        )
        == "always"
    )


def test_no_userland_proxy_serves_published_ports(host):
    assert host.run("pgrep -x docker-proxy").rc != 0


@pytest.fixture(scope="module")
def published(host):
    """Two containers: one on a port the firewall routes, one on a port it does not."""
    for port in (ALLOWED_PORT, CLOSED_PORT):
        build(host, f"ytempire-test/web:{port}", f"port {port}", port)
        host.check_output(
            f"docker rm -f web-{port} >/dev/null 2>&1; "
            f"docker run -d --name web-{port} -p {HOST_PORTS.get(port, port)}:{port} "
            f"ytempire-test/web:{port}"
        )
    for port in (ALLOWED_PORT, CLOSED_PORT):
        host.check_output(
            "curl -fsS --retry 20 --retry-connrefused --retry-delay 1 "
            f"http://127.0.0.1:{HOST_PORTS.get(port, port)}/v2/"
        )
    yield
    host.run(f"docker rm -f web-{ALLOWED_PORT} web-{CLOSED_PORT}")


def test_published_port_the_firewall_allows_answers_from_another_host(published, client, target_ip):
    result = client.run(
        f"curl -sS -o /dev/null -w '%{{http_code}}' --max-time 5 "
        f"http://{target_ip}:{HOST_PORTS[ALLOWED_PORT]}/v2/"
    )
    assert result.stdout == "200", result.stderr


def test_published_port_the_firewall_does_not_allow_is_unreachable(
    published, host, client, target_ip
):
    result = client.run(f"curl -sS -o /dev/null --max-time 5 http://{target_ip}:{CLOSED_PORT}/v2/")
    assert result.rc == 28, (
        f"port {CLOSED_PORT} answered the scanner: rc {result.rc} {result.stderr}"
    )
    # Dropped by the DOCKER-USER hook, not by accident: its deny counter moved.
    counters = host.check_output("iptables -L ufw-docker-logging-deny -v -x -n")
    assert any(line.split()[0] != "0" for line in counters.splitlines()[2:] if "DROP" in line)


def test_users_of_the_engine_reach_it_without_sudo(host):
    assert "docker" in host.user("deployer").groups
    assert host.run("runuser -u deployer -- docker ps -q").rc == 0


def test_users_taken_off_the_list_leave_the_docker_group(host):
    # prepare.yml made formerdocker a member; docker_users lists only deployer.
    assert host.user("formerdocker").exists
    assert "formerdocker" not in host.group("docker").members
    assert host.run("runuser -u formerdocker -- docker ps -q").rc != 0


def test_an_archive_copied_but_never_loaded_is_loaded(host):
    """prepare.yml left the registry archive on the host, unloaded, as a failed load
    would: the copy did not change, yet the image was loaded and is recorded."""
    assert host.run("docker image inspect ytempire/registry:2").rc == 0
    loaded = json.loads(host.file("/var/lib/ytempire/images.loaded.json").content_string)
    sha1 = host.check_output("sha1sum /var/lib/ytempire/images/registry-2.tar").split()[0]
    assert loaded["registry-2.tar"] == sha1
    # Every archive on the host (the platform's too) is recorded as loaded.
    archives = host.check_output("ls /var/lib/ytempire/images").split()
    assert sorted(loaded) == sorted(archives)


def prune(host, until: str = "0s") -> str:
    return host.check_output(f"PRUNE_UNTIL={until} /usr/local/sbin/ytempire-docker-prune")


def test_prune_keeps_the_current_and_previous_color(host):
    # The color files are the platform's (the stack role's, then the deploy's):
    # kept aside and put back afterwards.
    host.check_output(
        "mkdir -p /tmp/prune-test"
        " && for f in current_env previous_env; do"
        " [ ! -e /opt/ytempire/$f ] || cp -a /opt/ytempire/$f /tmp/prune-test/; done"
        " && echo blue > /opt/ytempire/current_env && echo green > /opt/ytempire/previous_env"
    )
    try:
        for tag in ("blue", "green", "v7-green", "old"):
            build(host, f"ytempire-test/app:{tag}", f"app {tag}")
        output = prune(host)
        kept = {
            tag
            for tag in ("blue", "green", "v7-green", "old")
            if host.run(f"docker image inspect ytempire-test/app:{tag}").rc == 0
        }
        assert kept == {"blue", "green", "v7-green"}, output
        # The image a running container uses is never pruned.
        assert host.run("docker image inspect ytempire/registry:2").rc == 0
    finally:
        host.run(
            # File by file: `cp -a dir/. /opt/ytempire/` would also give
            # /opt/ytempire the scratch directory's owner and mode.
            "rm -f /opt/ytempire/current_env /opt/ytempire/previous_env"
            " && for f in current_env previous_env; do"
            " [ ! -e /tmp/prune-test/$f ] || cp -a /tmp/prune-test/$f /opt/ytempire/; done"
            " && rm -rf /tmp/prune-test"
        )


def test_prune_is_scheduled_and_runs_as_a_service(host):
    timer = host.service("ytempire-docker-prune.timer")
    assert timer.is_enabled
    assert timer.is_running
    assert "04:30:00" in host.file("/etc/systemd/system/ytempire-docker-prune.timer").content_string
    result = host.run("systemctl start ytempire-docker-prune.service")
    assert result.rc == 0, host.run("journalctl -u ytempire-docker-prune -n 30").stdout
    assert (
        host.check_output("systemctl show -p Result --value ytempire-docker-prune.service")
        == "success"
    )


def test_local_fact_matches_the_host(host, applied):
    """What the role recorded (playbooks/summary.yml reads it) is what the host runs."""
    assert applied["engine"] == docker_json(host, ".Server.Version", "version")
    assert applied["compose"] == host.check_output("docker compose version --short")
    catalog = host.run(f"curl -fsS http://{applied['registry']}/v2/")
    assert catalog.rc == 0, catalog.stderr
    assert applied["nvidia_runtime"] == ("nvidia" in docker_json(host, ".Runtimes", "info"))
    assert not applied["nvidia_runtime"], "no NVIDIA runtime on a host without a GPU"
