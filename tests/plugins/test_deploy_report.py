"""deploy_report: each hook on real Ansible objects (TaskResult, Host, Task, Playbook,
AggregateStats), the record writer and the Slack sender on their own, real ansible-playbook
runs against localhost with a stand-in for blue_green (data/deploy_report/library/), and
Slack posts to a real HTTP server on 127.0.0.1. Output goes to a small recorder that stands in
for Ansible's Display; nothing of the plugin itself is replaced."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from ansible import constants as C
from ansible.executor.stats import AggregateStats
from ansible.executor.task_result import TaskResult
from ansible.inventory.host import Host
from ansible.parsing.dataloader import DataLoader
from ansible.playbook import Playbook
from ansible.playbook.task import Task
from ansible.plugins.loader import callback_loader, init_plugin_loader
from ansible.utils.collection_loader import AnsibleCollectionConfig
from ansible.vars.manager import VariableManager

ROOT = Path(__file__).resolve().parents[2]
CALLBACKS = ROOT / "plugins/callback"
DATA = Path(__file__).resolve().parent / "data/deploy_report"
BIN = Path(sys.executable).parent
ANSIBLE_PLAYBOOK = shutil.which("ansible-playbook", path=str(BIN)) or shutil.which(
    "ansible-playbook"
)
ANSIBLE_DOC = shutil.which("ansible-doc", path=str(BIN)) or shutil.which("ansible-doc")
# The webhook's secret part: it must never reach the output.
TOKEN = "xoxTOKENs3cr3t42"  # noqa: S105  a made-up token the output must not show
WEBHOOK_PATH = f"/services/T0YTEMPIRE/B0DEPLOY/{TOKEN}"
OPTION_ENV = ("YTEMPIRE_DEPLOY_RECORD_DIR", "YTEMPIRE_SLACK_WEBHOOK_URL", "YTEMPIRE_SLACK_TIMEOUT")


# --- test doubles for output and a real webhook -------------------------------------------


class Recorder:
    """Stands in for Ansible's Display: keeps what the plugin displays and warns."""

    verbosity = 0

    def __init__(self) -> None:
        self.lines: list[tuple[str, str | None]] = []
        self.warnings: list[str] = []

    def display(self, msg: str, color: str | None = None, **_: Any) -> None:
        self.lines.append((msg, color))

    def warning(self, msg: str, **_: Any) -> None:
        self.warnings.append(msg)

    @property
    def text(self) -> str:
        return "\n".join(line for line, _ in self.lines)


class Webhook:
    """A Slack-shaped webhook on 127.0.0.1: keeps each POST and answers `status`."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.posts: list[dict[str, Any]] = []
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                webhook.posts.append(
                    {
                        "path": self.path,
                        "content_type": self.headers["Content-Type"],
                        "json": json.loads(body),
                    }
                )
                answer = b"ok" if webhook.status == 200 else b"internal_error"
                self.send_response(webhook.status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{WEBHOOK_PATH}"

    @property
    def where(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Callable[..., Webhook]]:
    started: list[Webhook] = []

    def start(status: int = 200) -> Webhook:
        started.append(Webhook(status))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def closed_port_url() -> str:
    """A webhook URL on a 127.0.0.1 port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}{WEBHOOK_PATH}"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the plugin as Ansible loads it, and real Ansible objects to feed it ------------------


@pytest.fixture(autouse=True)
def no_option_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin's options come from each test, not from the caller's environment."""
    for name in OPTION_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def plugin_loader() -> None:
    if AnsibleCollectionConfig.collection_finder is None:
        init_plugin_loader()
    callback_loader.add_directory(str(CALLBACKS))


@pytest.fixture
def make_plugin(plugin_loader, tmp_path: Path) -> Callable[..., tuple[Any, Recorder]]:
    def make(**options: Any) -> tuple[Any, Recorder]:
        plugin = callback_loader.get("deploy_report")
        assert plugin is not None, f"deploy_report is not found in {CALLBACKS}"
        recorder = Recorder()
        plugin._display = recorder
        plugin.set_options(direct={"record_dir": str(tmp_path / "records"), **options})
        return plugin, recorder

    return make


@pytest.fixture
def plugin(make_plugin) -> tuple[Any, Recorder]:
    return make_plugin()


def deploy(**values: Any) -> dict[str, Any]:
    """A deploy dictionary of blue_green's contract."""
    return {
        "action": "deploy",
        "result": "succeeded",
        "from_color": "blue",
        "to_color": "green",
        "image": "localhost:5000/ytempire/ytvideo:1.4",
        "image_id": "sha256:4c1e6f0d2b",
        "previous_image": "localhost:5000/ytempire/ytvideo:1.3",
        "started": "2026-12-02T02:31:00Z",
        "duration_seconds": 41.2,
        "switch_seconds": 0.8,
        "steps": [
            {"name": "lock", "seconds": 0.01, "changed": False, "detail": "took the lock"},
            {"name": "health", "seconds": 27.05, "changed": False, "detail": "green is healthy"},
            {"name": "switch", "seconds": 0.8, "changed": True, "detail": "upstream green"},
        ],
        "record": "/var/lib/ytempire/deploys/20261202T023100Z-deploy.json",
        **values,
    }


def task_result(host: str, data: dict[str, Any], name: str = "Deploy the API image",
                action: str = "ansible.builtin.ping") -> TaskResult:  # fmt: skip
    """A result as callbacks get it, of a task named `name` running `action`."""
    task = Task.load({"name": name, "ansible.builtin.ping": {}})
    task.action = action  # blue_green itself is not installed here; the plugin reads the name
    return TaskResult(Host(host), task, data, {})


def stats_for(**counts: dict[str, int]) -> AggregateStats:
    """AggregateStats as the strategy leaves them: counts[host][what] increments."""
    stats = AggregateStats()
    for host, by_what in counts.items():
        for what, times in by_what.items():
            for _ in range(times):
                stats.increment(what, host)
    return stats


def records(directory: Path) -> list[Path]:
    return sorted(directory.iterdir()) if directory.exists() else []


def only_record(directory: Path) -> tuple[Path, dict[str, Any]]:
    found = records(directory)
    assert len(found) == 1, found
    return found[0], json.loads(found[0].read_text())


# --- one test per hook ---------------------------------------------------------------------


def test_playbook_on_start_names_the_playbook_and_starts_the_clock(plugin, tmp_path):
    callback, recorder = plugin
    loader = DataLoader()
    playbook = Playbook.load(
        str(DATA / "no_deploy.yml"), variable_manager=VariableManager(loader=loader), loader=loader
    )
    before = datetime.now(UTC)
    callback.v2_playbook_on_start(playbook)
    after = datetime.now(UTC)
    time.sleep(0.05)  # a start taken later than the hook would show
    callback.v2_runner_on_ok(task_result("prod1", {"changed": True, "deploy": deploy()}))
    callback.v2_playbook_on_stats(stats_for(prod1={"ok": 1}))

    path, record = only_record(tmp_path / "records")
    assert record["playbook"] == "no_deploy.yml"
    assert record["playbook_paths"] == [str(DATA / "no_deploy.yml")]
    started = datetime.fromisoformat(record["started"])
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= started <= after
    assert datetime.fromisoformat(record["ended"]) > after
    assert path.name.startswith(started.strftime("%Y%m%dT%H%M%SZ-deploy-prod1"))
    assert recorder.lines[0][0].startswith("DEPLOY REPORT [no_deploy.yml] ***")


def test_runner_on_ok_keeps_deploy_results_and_ignores_every_other(plugin, tmp_path):
    callback, recorder = plugin
    callback.v2_runner_on_ok(task_result("prod1", {"ping": "pong"}, name="Ping"))
    callback.v2_runner_on_ok(task_result("prod1", {"deploy": "not a dict", "changed": False}))
    callback.v2_runner_on_ok(task_result("prod1", {"deploy": {"changed": True}}))  # no action
    shown = {"deploy": deploy(), "_ansible_verbose_always": True}
    callback.v2_runner_on_ok(task_result("prod1", shown, "Show it", "ansible.builtin.debug"))
    callback.v2_runner_on_ok(task_result("prod1", {"changed": True, "deploy": deploy()}))
    loop = {
        "changed": False,
        "results": [
            {"item": "api", "changed": False, "deploy": deploy(action="none", result="unchanged")},
            {"item": "worker", "changed": False, "msg": "nothing"},
        ],
    }
    callback.v2_runner_on_ok(task_result("prod1", loop, name="Deploy each service"))
    callback.v2_playbook_on_stats(stats_for(prod1={"ok": 4, "changed": 1}))

    _, record = only_record(tmp_path / "records")
    assert record["deploys"] == [
        {"host": "prod1", "task": "Deploy the API image", "failed": False, "ignored": False,
         "changed": True, "msg": None, "deploy": deploy()},
        {"host": "prod1", "task": "Deploy each service", "failed": False, "ignored": False,
         "changed": False, "msg": None, "deploy": deploy(action="none", result="unchanged")},
    ]  # fmt: skip
    lines = recorder.text.splitlines()
    assert ("prod1: deploy blue -> green: succeeded", C.COLOR_OK) in recorder.lines
    assert "prod1: none blue -> green: unchanged" in lines
    for expected in (
        "  image          localhost:5000/ytempire/ytvideo:1.4 (sha256:4c1e6f0d2b)",
        "  previous       localhost:5000/ytempire/ytvideo:1.3",
        "  time           41.2 s total, switch 0.8 s",
        "  server record  /var/lib/ytempire/deploys/20261202T023100Z-deploy.json",
        "  step    seconds  changed  detail",
        "  lock       0.01  no       took the lock",
        "  health    27.05  no       green is healthy",
        "  switch     0.80  yes      upstream green",
    ):
        assert expected in lines, expected
    assert not any("message" in line for line in lines)
    assert recorder.warnings == []


def test_runner_on_ok_warns_about_a_blue_green_result_hidden_by_no_log(plugin, tmp_path):
    callback, recorder = plugin
    censored = {"changed": True, "censored": "the output has been hidden due to ... no_log"}
    callback.v2_runner_on_ok(task_result("prod1", censored, "Other secret", "ansible.builtin.uri"))
    assert recorder.warnings == []
    callback.v2_runner_on_ok(task_result("prod1", censored, action="ytempire.ops.blue_green"))
    assert recorder.warnings == [
        "deploy_report: the task 'Deploy the API image' on prod1 has no_log, which hides its "
        "deploy result; it is not reported"
    ]
    callback.v2_playbook_on_stats(stats_for(prod1={"ok": 2}))
    assert recorder.lines == []
    assert not (tmp_path / "records").exists()


def test_runner_on_failed_marks_the_result_failed_and_prints_why(plugin, tmp_path):
    callback, recorder = plugin
    callback.v2_runner_on_failed(task_result("prod1", {"msg": "boom"}, name="Other task"))
    reverted = deploy(result="reverted", switch_seconds=None,
                      message="green did not answer /health within 60 s")  # fmt: skip
    failed = {"changed": True, "msg": "the deploy reverted", "deploy": reverted}
    callback.v2_runner_on_failed(task_result("prod1", failed))
    refused = deploy(action="rollback", result="refused", from_color="green", to_color="blue",
                     image=None, image_id=None, switch_seconds=None, steps=[])  # fmt: skip
    no_message = {"changed": False, "msg": "no previous image to roll back to", "deploy": refused}
    callback.v2_runner_on_failed(task_result("prod2", no_message), ignore_errors=True)
    callback.v2_playbook_on_stats(stats_for(prod1={"failures": 2}, prod2={"ignored": 1}))

    _, record = only_record(tmp_path / "records")
    assert [(e["host"], e["failed"], e["ignored"], e["msg"]) for e in record["deploys"]] == [
        ("prod1", True, False, "the deploy reverted"),
        ("prod2", True, True, "no previous image to roll back to"),
    ]
    assert record["deploys"][0]["deploy"] == reverted
    assert ("prod1: deploy blue -> green: reverted", C.COLOR_WARN) in recorder.lines
    lines = recorder.text.splitlines()
    assert "  time           41.2 s total, no switch" in lines
    assert "  message: green did not answer /health within 60 s" in lines
    assert "prod2: rollback green -> blue: refused (failure ignored)" in lines
    assert "  image          -" in lines
    assert "  message: no previous image to roll back to" in lines
    assert "Other task" not in recorder.text
    assert "boom" not in recorder.text


def test_runner_on_unreachable_of_another_task_is_not_a_deploy(plugin, tmp_path):
    callback, recorder = plugin
    callback.v2_runner_on_unreachable(
        task_result("prod1", {"unreachable": True, "msg": "no route", "changed": False},
                    name="Gather facts", action="ansible.builtin.setup")
    )  # fmt: skip
    callback.v2_playbook_on_stats(stats_for(prod1={"dark": 1}))
    assert not (tmp_path / "records").exists() or not list((tmp_path / "records").iterdir())
    assert recorder.text == ""


def test_runner_on_unreachable_is_reported_without_a_deploy_result(plugin, tmp_path):
    callback, recorder = plugin
    message = "Failed to connect to the host via ssh: ssh: connect to host prod1 port 22: No route"
    callback.v2_runner_on_unreachable(
        task_result("prod1", {"unreachable": True, "msg": message, "changed": False},
                    action="blue_green")
    )  # fmt: skip
    callback.v2_playbook_on_stats(stats_for(prod1={"dark": 1}))

    path, record = only_record(tmp_path / "records")
    assert path.name.endswith("-unreachable-prod1.json")
    assert record["deploys"] == []
    assert record["unreachable"] == {"prod1": message}
    assert record["stats"]["prod1"]["unreachable"] == 1
    assert (f"prod1: UNREACHABLE: {message}", C.COLOR_UNREACHABLE) in recorder.lines


def test_playbook_on_stats_writes_the_run_record_with_the_recap(plugin, tmp_path):
    callback, recorder = plugin
    callback.v2_runner_on_ok(task_result("prod1", {"changed": True, "deploy": deploy()}))
    callback.v2_runner_on_failed(
        task_result("prod2", {"msg": "x", "deploy": deploy(result="failed", message="pull")})
    )
    callback.v2_runner_on_ok(task_result("prod1", {"deploy": deploy(action="rollback")}))
    stats = stats_for(prod1={"ok": 5, "changed": 2, "skipped": 1}, prod2={"ok": 2, "failures": 1})
    callback.v2_playbook_on_stats(stats)

    directory = tmp_path / "records"
    path, record = only_record(directory)
    assert path.name.endswith("-deploy+rollback-2-hosts.json")
    assert mode(directory) == 0o700
    assert mode(path) == 0o600
    assert record["format"] == 1
    assert [(e["host"], e["deploy"]["action"]) for e in record["deploys"]] == [
        ("prod1", "deploy"), ("prod2", "deploy"), ("prod1", "rollback"),
    ]  # fmt: skip
    assert record["stats"] == {
        "prod1": {"ok": 5, "changed": 2, "unreachable": 0, "failed": 0, "skipped": 1,
                  "rescued": 0, "ignored": 0},
        "prod2": {"ok": 2, "changed": 0, "unreachable": 0, "failed": 1, "skipped": 0,
                  "rescued": 0, "ignored": 0},
    }  # fmt: skip
    heads = [line for line, _ in recorder.lines if not line.startswith((" ", "DEPLOY"))]
    # one block per host: prod1's two results together, then prod2's
    assert heads == [
        "prod1: deploy blue -> green: succeeded",
        "prod1: rollback blue -> green: succeeded",
        "prod2: deploy blue -> green: failed",
        f"deploy record: {path}",
    ]
    assert recorder.warnings == []


def test_playbook_on_stats_without_a_deploy_result_is_silent(plugin, tmp_path, webhook):
    callback, recorder = plugin
    hook = webhook()
    callback.v2_runner_on_ok(task_result("prod1", {"ping": "pong"}))
    callback.v2_runner_on_failed(task_result("prod1", {"msg": "no deploy here"}))
    stats = stats_for(prod1={"ok": 1, "failures": 1})
    stats.set_custom_stats("ytempire_slack_webhook_url", hook.url)
    callback.v2_playbook_on_stats(stats)

    assert recorder.lines == []
    assert recorder.warnings == []
    assert not (tmp_path / "records").exists()
    assert hook.posts == []


# --- Slack from the stats hook -------------------------------------------------------------


def test_stats_posts_to_the_run_webhook_and_the_option_overrides_it(make_plugin, webhook):
    from_stats, from_option = webhook(), webhook()
    cases = [({}, from_stats), ({"slack_webhook_url": from_option.url}, from_option)]
    for options, receiver in cases:
        callback, recorder = make_plugin(**options)
        callback.v2_runner_on_ok(task_result("prod1", {"changed": True, "deploy": deploy()}))
        stats = stats_for(prod1={"ok": 1})
        stats.set_custom_stats("ytempire_slack_webhook_url", from_stats.url)
        callback.v2_playbook_on_stats(stats)
        assert recorder.warnings == []
        assert recorder.lines[-1][0] == f"deploy report posted to Slack ({receiver.where})"
        assert TOKEN not in recorder.text
    assert len(from_stats.posts) == 1
    assert len(from_option.posts) == 1
    post = from_option.posts[0]
    assert post["path"] == WEBHOOK_PATH
    assert post["content_type"] == "application/json"
    assert set(post["json"]) == {"text"}
    # the same message both ways, but for the start time each run took
    assert (
        post["json"]["text"].splitlines()[1:]
        == from_stats.posts[0]["json"]["text"].splitlines()[1:]
    )
    assert (
        "prod1: deploy blue -> green, localhost:5000/ytempire/ytvideo:1.4: succeeded in 41.2 s "
        "(switch 0.8 s)"
    ) in post["json"]["text"].splitlines()


def set_twice(stats: AggregateStats, url: str) -> None:
    """set_stats' default (aggregate) run twice, or once per host of a two-host play."""
    for _ in range(2):
        stats.update_custom_stats("ytempire_slack_webhook_url", url)


@pytest.mark.parametrize(
    ("set_it", "expected"),
    [
        (set_twice, "holds 2 URLs run together"),
        (lambda stats, url: stats.set_custom_stats("ytempire_slack_webhook_url", url, "prod1"),
         "is set per host"),
        (lambda stats, url: stats.set_custom_stats("ytempire_slack_webhook_url", [url]),
         "is a list, not a URL"),
    ],
    ids=["aggregated-twice", "per-host", "not-a-string"],
)  # fmt: skip
def test_stats_webhook_set_wrongly_warns_and_posts_nothing(plugin, webhook, set_it, expected):
    callback, recorder = plugin
    hook = webhook()
    callback.v2_runner_on_ok(task_result("prod1", {"changed": True, "deploy": deploy()}))
    stats = stats_for(prod1={"ok": 1})
    set_it(stats, hook.url)
    callback.v2_playbook_on_stats(stats)
    assert len(recorder.warnings) == 1
    assert recorder.warnings[0].startswith("deploy_report: no Slack message: ")
    assert expected in recorder.warnings[0]
    assert TOKEN not in recorder.warnings[0]
    assert hook.posts == []
    assert recorder.lines[0][0].startswith("DEPLOY REPORT")


def test_stats_record_that_cannot_be_written_warns_and_still_prints(make_plugin, tmp_path):
    (tmp_path / "a-file").write_text("")
    callback, recorder = make_plugin(record_dir=str(tmp_path / "a-file/records"))
    assert not callback.disabled
    callback.v2_runner_on_ok(task_result("prod1", {"changed": True, "deploy": deploy()}))
    callback.v2_playbook_on_stats(stats_for(prod1={"ok": 1}))
    assert len(recorder.warnings) == 1
    assert recorder.warnings[0].startswith(
        f"deploy_report: the deploy record was not written to {tmp_path / 'a-file/records'}: "
    )
    assert "prod1: deploy blue -> green: succeeded" in recorder.text
    assert "deploy record:" not in recorder.text


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"slack_timeout": 0}, "slack_timeout is 0"),
        ({"record_dir": "FILE"}, "exists and is not a directory"),
    ],
)
def test_misconfigured_plugin_disables_itself_with_a_warning(make_plugin, tmp_path, options,
                                                            reason):  # fmt: skip
    (tmp_path / "FILE").write_text("")
    options = {k: str(tmp_path / v) if v == "FILE" else v for k, v in options.items()}
    callback, recorder = make_plugin(**options)
    assert callback.disabled is True
    assert len(recorder.warnings) == 1
    assert recorder.warnings[0].startswith("deploy_report: disabled, ")
    assert reason in recorder.warnings[0]
    callback_ok, recorder_ok = make_plugin()
    assert callback_ok.disabled is False
    assert recorder_ok.warnings == []


# --- the writer and the sender on their own ------------------------------------------------


@pytest.fixture(scope="module")
def plugin_module(plugin_loader) -> Any:
    return sys.modules[type(callback_loader.get("deploy_report")).__module__]


def test_record_writer_never_overwrites_and_leaves_no_temporary_file(plugin_module, tmp_path):
    directory = tmp_path / "kept"
    directory.mkdir(mode=0o750)
    os.chmod(directory, 0o750)  # noqa: S103  a mode the writer must leave alone
    writer = plugin_module.RecordWriter(directory)
    first = writer.write("20261202T023100Z-deploy-prod1.json", {"n": 1})
    second = writer.write("20261202T023100Z-deploy-prod1.json", {"n": 2})
    assert first.name == "20261202T023100Z-deploy-prod1.json"
    assert second.name == "20261202T023100Z-deploy-prod1-1.json"
    assert json.loads(first.read_text()) == {"n": 1}
    assert json.loads(second.read_text()) == {"n": 2}
    assert {p.name for p in directory.iterdir()} == {first.name, second.name}
    assert mode(directory) == 0o750  # an existing directory keeps its mode
    assert mode(first) == mode(second) == 0o600
    with pytest.raises(NotADirectoryError):
        plugin_module.RecordWriter(first).write("x.json", {})


def test_record_name_sanitises_and_counts_hosts(plugin_module):
    started = datetime(2026, 12, 2, 2, 30, 58, 120000, tzinfo=UTC)
    one = [{"host": "prod/1 a", "deploy": {"action": "deploy"}}]
    assert plugin_module.record_name(started, one, {}) == "20261202T023058Z-deploy-prod_1_a.json"
    several = [{"host": "a", "deploy": {"action": None}}, {"host": "b", "deploy": {}}]
    name = plugin_module.record_name(started, several, {"c": "unreachable"})
    assert name == "20261202T023058Z-none-3-hosts.json"


def test_slack_notifier_posts_json_text(plugin_module, webhook):
    hook = webhook()
    status = plugin_module.SlackNotifier(hook.url, 5).post("deploy done")
    assert status == 200
    assert hook.posts == [
        {"path": WEBHOOK_PATH, "content_type": "application/json", "json": {"text": "deploy done"}}
    ]


def test_slack_notifier_failures_name_the_error_not_the_url(plugin_module, webhook):
    notifier = plugin_module.SlackNotifier
    hook = webhook(500)
    silent = socket.socket()  # accepts connections (backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    cases = [
        (hook.url, f"the post to {hook.where} failed: HTTP 500 Internal Server Error"),
        (closed_port_url(), "Connection refused"),
        (f"http://127.0.0.1:{silent.getsockname()[1]}{WEBHOOK_PATH}",
         f"http://127.0.0.1:{silent.getsockname()[1]} did not answer within 0.3 s"),
        (f"hooks.slack.com{WEBHOOK_PATH}", "is not an http(s) URL with a host"),
        (f"ftp://hooks.slack.com{WEBHOOK_PATH}", "(ftp://hooks.slack.com) is not an http(s) URL"),
        (f"https://[::1{WEBHOOK_PATH}", "is not an http(s) URL with a host"),
        (f"http://127.0.0.1:1/services/T0 YTEMPIRE/{TOKEN}", "InvalidURL: URL can't contain"),
    ]  # fmt: skip
    try:
        for url, expected in cases:
            started = time.monotonic()
            with pytest.raises(plugin_module.NotificationError) as raised:
                notifier(url, 0.3).post("deploy done")
            assert time.monotonic() - started < 3
            assert expected in str(raised.value), (url, str(raised.value))
            assert TOKEN not in str(raised.value)
            assert "/services/" not in str(raised.value)
    finally:
        silent.close()
    assert len(hook.posts) == 1


def test_redact_url_keeps_scheme_and_host_only(plugin_module):
    redact = plugin_module.redact_url
    assert redact(f"https://user:pw@hooks.slack.com{WEBHOOK_PATH}?x=1") == "https://hooks.slack.com"
    assert redact(f"http://127.0.0.1:8080{WEBHOOK_PATH}") == "http://127.0.0.1:8080"
    assert redact(f"https://[::1]:8443{WEBHOOK_PATH}") == "https://[::1]:8443"
    assert TOKEN not in redact(f"{WEBHOOK_PATH}")
    assert TOKEN not in redact(f"http://[{TOKEN}")


# --- ansible-doc ---------------------------------------------------------------------------


def test_ansible_doc_renders_the_callback():
    assert ANSIBLE_DOC, "ansible-doc is not installed next to this Python"
    command = [ANSIBLE_DOC, "-t", "callback", "-M", str(CALLBACKS)]
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1"}
    rendered = subprocess.run([*command, "deploy_report"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    for text in ("CALLBACK deploy_report", "record_dir", "YTEMPIRE_DEPLOY_RECORD_DIR",
                 "slack_webhook_url", "YTEMPIRE_SLACK_WEBHOOK_URL", "slack_timeout",
                 "callback_deploy_report", "~/.local/state/ytempire/deploys",
                 "ytempire_slack_webhook_url", "TYPE: aggregate"):  # fmt: skip
        assert text in rendered.stdout, text
    as_json = subprocess.run([*command, "--json", "deploy_report"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)["deploy_report"]["doc"]
    assert doc["type"] == "aggregate"
    options = doc["options"]
    assert set(options) == {"record_dir", "slack_webhook_url", "slack_timeout"}
    assert options["record_dir"]["type"] == "path"
    assert options["record_dir"]["default"] == "~/.local/state/ytempire/deploys"
    assert options["slack_timeout"]["type"] == "float"
    assert options["slack_timeout"]["default"] == 5
    for name, env_name in (("record_dir", "YTEMPIRE_DEPLOY_RECORD_DIR"),
                           ("slack_webhook_url", "YTEMPIRE_SLACK_WEBHOOK_URL"),
                           ("slack_timeout", "YTEMPIRE_SLACK_TIMEOUT")):  # fmt: skip
        assert options[name]["env"] == [{"name": env_name}]
        assert options[name]["ini"] == [{"section": "callback_deploy_report", "key": name}]


# --- real ansible-playbook runs -------------------------------------------------------------

WHY = "green did not answer /health within 60 s"


@dataclasses.dataclass
class Run:
    """One ansible-playbook run: exit status, stdout, stdout and stderr, its record directory."""

    returncode: int
    stdout: str
    output: str
    records: Path


def start_playbook(playbook: str, directory: Path, extra_vars: dict[str, str],
                   env: dict[str, str]) -> subprocess.Popen:  # fmt: skip
    """ansible-playbook on localhost with deploy_report enabled, started."""
    assert ANSIBLE_PLAYBOOK, "ansible-playbook is not installed next to this Python"
    run_env = {k: v for k, v in os.environ.items() if k not in OPTION_ENV}
    run_env.update(
        ANSIBLE_CALLBACK_PLUGINS=str(CALLBACKS),
        ANSIBLE_CALLBACKS_ENABLED="deploy_report",
        YTEMPIRE_DEPLOY_RECORD_DIR=str(directory / "records"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_LOCAL_TEMP=str(directory / "ansible-local"),
        ANSIBLE_REMOTE_TEMP=str(directory / "ansible-remote"),
        NO_PROXY="127.0.0.1,localhost",  # the test webhooks are local, even behind a proxy
        no_proxy="127.0.0.1,localhost",
        **env,
    )
    command = [ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local",
               "-e", f"ansible_python_interpreter={sys.executable}",
               "-e", json.dumps(extra_vars), str(DATA / playbook)]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, env=run_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


@pytest.fixture(scope="module")
def webhooks() -> Iterator[dict[str, Webhook]]:
    servers = {"ok": Webhook(200), "http-500": Webhook(500), "no-deploy": Webhook(200)}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, webhooks) -> dict[str, Run]:
    """The module's playbook runs. They start together: each spends most of its time
    starting Python and Ansible, so together they take little longer than one."""
    url = "deploy_report_test_webhook_url"
    plans = {
        "ok": ("deploy.yml", {url: webhooks["ok"].url}, {}),
        "failed": ("deploy.yml", {"deploy_report_test_result": "reverted",
                                  "deploy_report_test_message": WHY}, {}),
        "closed-port": ("deploy.yml", {url: closed_port_url()}, {}),
        "http-500": ("deploy.yml", {url: webhooks["http-500"].url}, {}),
        "no-deploy": ("no_deploy.yml", {},
                      {"YTEMPIRE_SLACK_WEBHOOK_URL": webhooks["no-deploy"].url}),
    }  # fmt: skip
    directories = {name: tmp_path_factory.mktemp(name) for name in plans}
    started = {name: start_playbook(playbook, directories[name], extra_vars, env)
               for name, (playbook, extra_vars, env) in plans.items()}  # fmt: skip
    done = {}
    for name, process in started.items():
        try:
            stdout, stderr = process.communicate(timeout=120)
        finally:
            process.kill()
        done[name] = Run(process.returncode, stdout, stdout + stderr, directories[name] / "records")
    return done


def test_end_to_end_ok_run_prints_the_summary_and_records_it(runs, webhooks):
    run = runs["ok"]
    assert run.returncode == 0, run.output
    summary = run.stdout[run.stdout.index("DEPLOY REPORT [deploy.yml] ***") :].splitlines()
    path, record = only_record(run.records)
    assert summary == [
        summary[0],
        "localhost: deploy blue -> green: succeeded",
        "  image          localhost:5000/ytempire/ytvideo:1.4 (sha256:4c1e6f0d2b)",
        "  previous       localhost:5000/ytempire/ytvideo:1.3",
        "  time           41.2 s total, switch 0.8 s",
        "  started        2026-12-02T02:31:00Z",
        "  server record  /var/lib/ytempire/deploys/20261202T023100Z-deploy.json",
        "  step    seconds  changed  detail",
        "  lock       0.01  no       took /run/ytempire/deploy.lock",
        "  pull      12.30  yes      localhost:5000/ytempire/ytvideo:1.4",
        "  health    27.05  no       green answered /health",
        "  switch     0.80  yes      upstream",
        f"deploy record: {path}",
        f"deploy report posted to Slack ({webhooks['ok'].where})",
    ]
    assert "[WARNING]" not in run.output
    assert mode(run.records) == 0o700
    assert mode(path) == 0o600
    assert path.name.endswith("-deploy-localhost.json")
    assert record["playbook"] == "deploy.yml"
    assert record["playbook_paths"] == [str(DATA / "deploy.yml")]
    assert record["stats"] == {"localhost": {"ok": 3, "changed": 1, "unreachable": 0,
                                             "failed": 0, "skipped": 0, "rescued": 0,
                                             "ignored": 0}}  # fmt: skip
    assert record["unreachable"] == {}
    [entry] = record["deploys"]
    assert (entry["host"], entry["task"], entry["failed"], entry["changed"]) == (
        "localhost", "Deploy the API image", False, True,
    )  # fmt: skip
    assert entry["deploy"]["result"] == "succeeded"
    steps = [step["name"] for step in entry["deploy"]["steps"]]
    assert steps == ["lock", "pull", "health", "switch"]


def test_end_to_end_failed_run_prints_why_and_records_the_failure(runs):
    run = runs["failed"]
    assert run.returncode == 2, run.output
    lines = run.stdout.splitlines()
    assert "localhost: deploy blue -> green: reverted" in lines
    assert "  time           41.2 s total, switch 0.8 s" in lines
    assert f"  message: {WHY}" in lines
    path, record = only_record(run.records)
    assert path.name.endswith("-deploy-localhost.json")
    assert mode(run.records) == 0o700
    assert mode(path) == 0o600
    [entry] = record["deploys"]
    assert entry["failed"] is True
    assert entry["msg"] == f"the deploy reverted: {WHY}"
    assert entry["deploy"]["result"] == "reverted"
    assert entry["deploy"]["message"] == WHY
    assert record["stats"]["localhost"]["failed"] == 1
    assert "Slack (" not in run.output  # the playbook's webhook is empty: no post
    assert "no Slack message" not in run.output


def test_end_to_end_slack_gets_the_post_named_through_set_stats(runs, webhooks):
    run = runs["ok"]
    assert len(webhooks["ok"].posts) == 1
    post = webhooks["ok"].posts[0]
    assert post["path"] == WEBHOOK_PATH
    assert post["content_type"] == "application/json"
    text = post["json"]["text"]
    assert text.startswith("YTEMPIRE deploy.yml (started ")
    assert (
        "localhost: deploy blue -> green, localhost:5000/ytempire/ytvideo:1.4: succeeded in 41.2 s"
        " (switch 0.8 s)"
    ) in text.splitlines()
    assert TOKEN not in run.output
    assert "/services/" not in run.output


@pytest.mark.parametrize(
    ("answer", "error"),
    [("closed-port", "Connection refused"), ("http-500", "HTTP 500 Internal Server Error")],
)
def test_end_to_end_slack_failure_warns_and_the_run_succeeds(runs, webhooks, answer, error):
    run = runs[answer]
    assert run.returncode == 0, run.output
    warnings = [line for line in run.output.splitlines() if "[WARNING]" in line]
    assert len(warnings) == 1, run.output
    assert "deploy_report: no Slack message: the post to http://127.0.0.1:" in warnings[0]
    assert error in warnings[0]
    assert TOKEN not in run.output
    assert "/services/" not in run.output
    assert len(webhooks["http-500"].posts) == 1  # the 500 answered a real post
    assert "localhost: deploy blue -> green: succeeded" in run.stdout
    _, record = only_record(run.records)
    assert record["deploys"][0]["deploy"]["result"] == "succeeded"


def test_end_to_end_playbook_without_deploy_result_prints_and_writes_nothing(runs, webhooks):
    run = runs["no-deploy"]
    assert run.returncode == 0, run.output
    assert "TASK [Fail and be ignored]" in run.stdout  # the run did happen
    for text in ("DEPLOY REPORT", "deploy record", "deploy_report:", "Slack", "[WARNING]"):
        assert text not in run.output, text
    assert not run.records.exists()
    assert webhooks["no-deploy"].posts == []
