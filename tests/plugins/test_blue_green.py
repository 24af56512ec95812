"""blue_green: the pure parts (state files, the upstream file against what the
nginx role renders, access-log counting, the watch decision, image tags, the
schema rule, the color files, the metrics, archive ids), its refusal of bad
input through Ansible before it touches anything, and its documentation. The
switch itself runs against the real platform in the site scenario
(molecule/site/tests/test_deploy.py)."""

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from prometheus_client.parser import text_string_to_metric_families

from tests.plugins.ansible_doc import ansible_doc
from tests.plugins.loader import load

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = shutil.which("ansible", path=str(Path(sys.executable).parent)) or shutil.which("ansible")


# module_utils is imported by the module as ansible.module_utils.blue_green.
bg = load("ansible.module_utils.blue_green", ROOT / "plugins/module_utils/blue_green.py")
module = load("blue_green_module", ROOT / "plugins/modules/blue_green.py")
PORTS = {"green": 8081, "blue": 8082}


# --- state files -------------------------------------------------------------------


def test_other_and_state_files():
    assert (bg.other("blue"), bg.other("green")) == ("green", "blue")
    with pytest.raises(bg.StateError):
        bg.other("red")
    assert bg.parse_color("green\n", "current_env") == "green"
    assert bg.parse_color(None, "previous_env") is None
    with pytest.raises(bg.StateError, match="current_env says 'purple'"):
        bg.parse_color("purple\n", "current_env")


# --- the upstream file ---------------------------------------------------------------


def _nginx_role_upstream(first_color: str) -> str:
    """The upstream file as the nginx role's template writes it first."""
    source = (ROOT / "roles/nginx/templates/etc/nginx/ytempire/upstream-api.conf.j2").read_text()
    templar = Templar(
        loader=DataLoader(),
        variables={
            "ansible_managed": "Ansible managed",
            "__nginx_first_color": first_color,
            "nginx_api_green_port": 8081,
            "nginx_api_blue_port": 8082,
            "nginx_upstream_keepalive": 32,
            "__nginx_check_script": "/usr/local/sbin/ytempire-nginx-check",
        },
    )
    return templar.template(trust_as_template(source))


@pytest.mark.parametrize("color", ["blue", "green"])
def test_module_reads_the_file_the_nginx_role_writes(color):
    assert bg.parse_upstream(_nginx_role_upstream(color), "ytempire_api", PORTS) == color


@pytest.mark.parametrize("color", ["blue", "green"])
def test_rendered_upstream_names_the_colors_port_and_keeps_the_roles_block(color):
    text = bg.render_upstream("ytempire_api", color, PORTS[color], 32, "test")
    assert bg.parse_upstream(text, "ytempire_api", PORTS) == color
    block = text[text.index("upstream ") :]
    role = _nginx_role_upstream(color)
    assert block == role[role.index("upstream ") :]


def test_upstream_that_is_not_ours_is_refused():
    with pytest.raises(bg.StateError, match="port 9999, which is no color's"):
        bg.parse_upstream(
            "upstream ytempire_api {\n server 127.0.0.1:9999;\n}\n", "ytempire_api", PORTS
        )
    two = "upstream ytempire_api {\n server 127.0.0.1:8081;\n server 127.0.0.1:8082;\n}\n"
    with pytest.raises(bg.StateError, match="2 server lines"):
        bg.parse_upstream(two, "ytempire_api", PORTS)
    with pytest.raises(bg.StateError, match="0 upstream ytempire_api blocks"):
        bg.parse_upstream("upstream other {\n server 127.0.0.1:8081;\n}\n", "ytempire_api", PORTS)


# --- the access log ---------------------------------------------------------------------

LOG = [
    '10.0.0.2 - [02/Dec/2026:02:31:00 +0000] 200 "GET /health HTTP/1.1" 52 "-" "curl" '
    "rid=a upstream=127.0.0.1:8081 rt=0.004",
    '10.0.0.2 - [02/Dec/2026:02:31:00 +0000] 502 "GET /api/videos/x HTTP/1.1" 150 "-" "curl" '
    "rid=b upstream=127.0.0.1:8081 rt=0.001",
    '10.0.0.2 - [02/Dec/2026:02:31:01 +0000] 500 "GET /health HTTP/1.1" 20 "-" "curl" '
    "rid=c upstream=127.0.0.1:8082 rt=0.003",
    '10.0.0.2 - [02/Dec/2026:02:31:01 +0000] 200 "GET / HTTP/1.1" 900 "-" "curl" '
    "rid=d upstream=127.0.0.1:3000 rt=0.002",
    '10.0.0.2 - [02/Dec/2026:02:31:02 +0000] 504 "GET /health HTTP/1.1" 0 "-" "curl" '
    "rid=e upstream=127.0.0.1:8082, 127.0.0.1:8081 rt=5.0",
    "a line in another format",
]


def test_access_log_counts_the_answers_of_one_upstream():
    assert bg.count_statuses(LOG, "127.0.0.1:8081") == (3, 2)
    assert bg.count_statuses(LOG, "127.0.0.1:8082") == (1, 1)
    assert bg.count_statuses(LOG, "127.0.0.1:5678") == (0, 0)


# --- the watch ----------------------------------------------------------------------------


def test_watch_keeps_a_healthy_color():
    samples = [
        bg.WatchSample(True, 50, 1),
        bg.WatchSample(False, 40, 0),
        bg.WatchSample(True, 30, 2),
    ]
    verdict = bg.watch_verdict(samples, 0.05, 20, 3)
    assert verdict.ok, verdict.reason
    assert (verdict.answers, verdict.errors) == (120, 3)


def test_watch_reverts_on_failed_health_checks_in_a_row():
    samples = [
        bg.WatchSample(True),
        bg.WatchSample(False),
        bg.WatchSample(False),
        bg.WatchSample(False),
    ]
    verdict = bg.watch_verdict(samples, 0.05, 20, 3)
    assert not verdict.ok
    assert "failed 3 times in a row" in verdict.reason
    interrupted = [
        bg.WatchSample(False),
        bg.WatchSample(False),
        bg.WatchSample(True),
        bg.WatchSample(False),
    ]
    assert bg.watch_verdict(interrupted, 0.05, 20, 3).ok


def test_watch_reverts_on_a_5xx_share_over_the_limit_once_enough_answers_came():
    few = [bg.WatchSample(True, 10, 10)]
    assert bg.watch_verdict(few, 0.05, 20, 3).ok, "ten answers prove nothing"
    many = [bg.WatchSample(True, 10, 10), bg.WatchSample(True, 90, 0)]
    verdict = bg.watch_verdict(many, 0.05, 20, 3)
    assert not verdict.ok
    assert "10 of 100 answers through nginx were 5xx (10.0% > 5.0%)" in verdict.reason
    assert bg.watch_verdict([bg.WatchSample(True, 100, 5)], 0.05, 20, 3).ok, "5% is allowed"


# --- images and schema -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "repository"),
    [
        ("ytempire/ytvideo:latest", "ytempire/ytvideo"),
        ("localhost:5000/ytempire/ytvideo:1.4", "localhost:5000/ytempire/ytvideo"),
        ("localhost:5000/ytempire/ytvideo", "localhost:5000/ytempire/ytvideo"),
        ("registry.example.com/a/b@sha256:" + "0" * 64, "registry.example.com/a/b"),
        ("ytvideo:1.4@sha256:" + "1" * 64, "ytvideo"),
    ],
)
def test_color_tags_keep_the_repository(ref, repository):
    assert bg.image_repository(ref) == repository
    assert bg.color_tag(ref, "green") == f"{repository}:green"


def _labels(version=None, floor=None):
    labels = {}
    if version is not None:
        labels[bg.SCHEMA_LABEL] = str(version)
    if floor is not None:
        labels[bg.COMPATIBLE_FROM_LABEL] = str(floor)
    return labels


def test_schema_rule():
    assert bg.schema_check(_labels(1, 1), _labels(2, 1)).ok, "additive migration"
    assert bg.schema_check(_labels(2, 1), _labels(2, 1)).ok
    breaking = bg.schema_check(_labels(1, 1), _labels(3, 2))
    assert not breaking.ok
    assert "migrates to schema 3, which needs schema 2 or newer" in breaking.reason
    assert "serving color runs schema 1" in breaking.reason
    unknown = bg.schema_check({}, _labels(3, 2))
    assert unknown.ok
    assert "taken as compatible" in unknown.reason
    assert not bg.schema_check(_labels("one", 1), _labels(2, 1)).ok


# --- color files ------------------------------------------------------------------------------


def test_color_file_round_trip_and_the_stack_roles_first_file():
    text = bg.render_color_file(
        "green", "ytempire/ytvideo:green", "ytempire/ytvideo:1.4", "sha256:ab", "t"
    )
    image, meta = bg.parse_color_file(text)
    assert image == "ytempire/ytvideo:green"
    assert meta["source"] == "ytempire/ytvideo:1.4"
    assert meta["id"] == "sha256:ab"
    first = (ROOT / "roles/stack/templates/opt/ytempire/docker-compose.color.yml.j2").read_text()
    first = first.replace("{{ __stack_color }}", "blue").replace(
        "{{ stack_images.api.image }}", "ytempire/ytvideo:latest"
    )
    assert bg.parse_color_file(first) == ("ytempire/ytvideo:latest", {})
    with pytest.raises(bg.StateError, match="2 images"):
        bg.parse_color_file(first.replace("ytempire/ytvideo:latest\n", "other:1\n", 1))


# --- metrics ----------------------------------------------------------------------------------


def test_metrics_parse_and_carry_both_actions():
    last = {
        "deploy": {
            "ended": 1700000000.5,
            "result": "reverted",
            "switch_seconds": 0.25,
            "duration_seconds": 40,
        },
        "rollback": {
            "ended": 1700000100.0,
            "result": "succeeded",
            "switch_seconds": 0.5,
            "duration_seconds": 1.5,
        },
    }
    families = {
        f.name: f for f in text_string_to_metric_families(bg.render_metrics(last, "blue", 1.0))
    }
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert values[("ytempire_deploy_last_success", (("action", "deploy"),))] == 0
    assert values[("ytempire_deploy_last_success", (("action", "rollback"),))] == 1
    assert values[("ytempire_deploy_switch_duration_seconds", (("action", "rollback"),))] == 0.5
    assert values[("ytempire_rollback_duration_seconds", ())] == 1.5
    assert values[("ytempire_deploy_active_color", (("color", "blue"),))] == 1
    assert values[("ytempire_deploy_active_color", (("color", "green"),))] == 0
    assert (
        values[("ytempire_deploy_last_timestamp_seconds", (("action", "deploy"),))] == 1700000000.5
    )
    only_deploy = bg.render_metrics({"deploy": last["deploy"]}, None, 1.0)
    assert "\nytempire_rollback_duration_seconds " not in only_deploy
    assert list(text_string_to_metric_families(only_deploy))


# --- archives -----------------------------------------------------------------------------------


def _archive(path: Path, manifest: list) -> Path:
    with tarfile.open(path, "w") as tar:
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_archive_image_id_reads_the_manifest(tmp_path):
    digest = "c" * 64
    archive = _archive(
        tmp_path / "a.tar",
        [{"Config": f"{digest}.json", "RepoTags": ["ytempire/ytvideo:1.4"]},
         {"Config": f"blobs/sha256/{'d' * 64}", "RepoTags": ["ytempire/ytvideo:1.5"]}],
    )  # fmt: skip
    assert module.archive_image_id(str(archive), "ytempire/ytvideo:1.4") == f"sha256:{digest}"
    assert module.archive_image_id(str(archive), "ytempire/ytvideo:1.5") == f"sha256:{'d' * 64}"
    with pytest.raises(module.Refused, match=r"does not hold ytempire/ytvideo:2 \(it holds"):
        module.archive_image_id(str(archive), "ytempire/ytvideo:2")
    (tmp_path / "b.tar").write_text("not a tar")
    with pytest.raises(module.Refused, match="is not a docker save archive"):
        module.archive_image_id(str(tmp_path / "b.tar"), "x:1")


# --- the module through Ansible ----------------------------------------------------------------


def _run_module(args: dict, tmp_path: Path) -> tuple[int, dict]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_CACHE_PLUGIN": "memory", "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
           "ANSIBLE_LOCALHOST_WARNING": "false",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp")}  # fmt: skip
    done = subprocess.run(
        [ANSIBLE, "localhost", "-i", "localhost,", "-c", "local", "-m", "blue_green",
         "-e", f"ansible_python_interpreter={sys.executable}", "-a", json.dumps(args)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    _, _, result = done.stdout.partition(" => ")
    return done.returncode, json.loads(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"ports": {"blue": 8082}}, "ports must name blue and green"),
        ({"ports": {"blue": 8082, "green": 8082}}, "ports.blue and ports.green must differ"),
        ({"ports": {"blue": 8082, "green": "x"}}, "ports.green must be a port number"),
        ({"health_retries": 0}, "health_retries must be at least 1"),
        ({"watch_max_error_ratio": 2}, "watch_max_error_ratio must be between 0 and 1"),
        ({"retire_after": -1}, "retire_after must not be negative"),
    ],
)
def test_bad_input_is_refused_before_anything(args, message, tmp_path):
    lock = tmp_path / "lock"
    rc, result = _run_module(
        {
            "image": "ytempire/ytvideo:1",
            "lock_file": str(lock),
            "record_dir": str(tmp_path / "r"),
            **args,
        },
        tmp_path,
    )
    assert rc != 0
    assert message in result["msg"]
    assert result["deploy"]["result"] == "refused"
    assert not lock.exists()
    assert not (tmp_path / "r").exists()


def test_missing_state_files_are_refused_naming_them(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    rc, result = _run_module(
        {"image": "ytempire/ytvideo:1", "project_dir": str(project),
         "lock_file": str(tmp_path / "lock"), "upstream_file": str(tmp_path / "upstream.conf"),
         "record_dir": str(tmp_path / "r"), "textfile_dir": ""},
        tmp_path,
    )  # fmt: skip
    assert rc != 0
    assert (
        f"{tmp_path / 'upstream.conf'} is missing: the nginx role writes it first" in result["msg"]
    )
    assert result["deploy"]["steps"][0]["name"] == "lock"


def test_a_second_run_is_refused_while_the_lock_is_held(tmp_path):
    lock = tmp_path / "lock"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT);"
         "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'pid 4242 deploying x');"
         "print('held', flush=True);"
         "time.sleep(60)", str(lock)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        rc, result = _run_module({"image": "ytempire/ytvideo:1", "lock_file": str(lock)}, tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert rc != 0
    assert (
        "another deploy or rollback is running on this server (pid 4242 deploying x)"
        in result["msg"]
    )
    assert result["deploy"]["result"] == "refused"


def test_ansible_doc_renders_the_module():
    rendered, doc = ansible_doc("blue_green")
    for text in (
        "state",
        "image_archive",
        "watch_seconds",
        "retire_after",
        "/health/ready",
        "previous_env",
    ):
        assert text in rendered, text
    options = doc["doc"]["options"]
    assert options["state"]["choices"] == ["deployed", "active"]
    assert options["ports"]["default"] == PORTS
    assert options["health_retries"]["default"] == 60
    assert options["health_delay"]["default"] == 5
    assert options["retire_after"]["default"] == 300
    assert doc["doc"]["attributes"]["check_mode"]["support"] == "full"
    assert set(doc["return"]) == {"deploy"}


def test_archive_image_id_is_the_id_docker_gives_the_loaded_image(tmp_path):
    """Against a real `docker save` (the engine's archive layout, not a made-up one)."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True).returncode:
        pytest.fail("a Docker engine is needed (scripts/bootstrap.sh starts one)")
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx/release").write_text("2\n")
    (tmp_path / "ctx/Dockerfile").write_text(
        'FROM scratch\nCOPY release /release\nLABEL org.ytempire.release="2"\n'
    )
    tag = f"ytempire-test/archive:{os.getpid()}"
    try:
        subprocess.run(
            [docker, "build", "-q", "-t", tag, str(tmp_path / "ctx")],
            check=True,
            capture_output=True,
        )
        inspect = [docker, "image", "inspect", "--format", "{{.Id}}", tag]
        built = subprocess.run(inspect, check=True, capture_output=True, text=True).stdout.strip()
        subprocess.run([docker, "save", "-o", str(tmp_path / "a.tar"), tag], check=True)
    finally:
        subprocess.run([docker, "image", "rm", "-f", tag], capture_output=True)
    assert module.archive_image_id(str(tmp_path / "a.tar"), tag) == built
