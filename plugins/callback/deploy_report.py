# SPDX-License-Identifier: MIT
"""Report the blue-green deploys and rollbacks of a run: on the console, in a JSON record on
the controller and, when the run names a webhook, on Slack."""

from __future__ import annotations

DOCUMENTATION = r"""
name: deploy_report
type: aggregate
author: ytempire-ops
short_description: Report blue-green deploys and rollbacks on the console, in a record and on Slack
description:
  - Keeps every task result that carries a C(deploy) dictionary (what the C(blue_green) module
    returns, whether the task succeeded or failed) and every host that could not be reached.
  - At the end of the run, when it kept any, it prints one block per host (action, from and to
    color, image, result, total and switch time, a table of the steps, the failure message),
    writes one JSON record of the run on the controller, and posts a short text to a Slack
    webhook when the run names one.
  - A run without a deploy result and without an unreachable host prints nothing and writes
    nothing, so the plugin can stay enabled for every playbook. A run that loses a host is
    reported even without a deploy result, so a deploy that never reached its server says so.
  - It observes only. A record it cannot write and a message it cannot post are warnings; they
    never fail the run.
requirements:
  - ansible-core 2.19 or later
  - Enabled with C(callbacks_enabled = deploy_report) in C(ansible.cfg) or
    C(ANSIBLE_CALLBACKS_ENABLED=deploy_report)
options:
  record_dir:
    description:
      - The controller directory the run's record goes to, created with mode C(0700) when
        missing (an existing directory keeps its mode).
      - One file per run, mode C(0600), written to a temporary file in the same directory and
        renamed into place. Its name is C(<start>-<action>-<host>.json), where C(<start>) is
        the run's start in UTC (C(20261202T023058Z)), C(<action>) the actions of the run in
        order joined by C(+) (C(deploy), C(deploy+rollback); C(unreachable) when the run has
        no deploy result) and C(<host>) the host, or C(<n>-hosts) for a run on several.
        Characters other than letters, digits, C(.), C(_), C(+) and C(-) become C(_). A name
        already taken gets C(-1), C(-2), ... before C(.json).
      - 'The record (C(format: 1)) holds C(playbook), C(playbook_paths), C(started), C(ended),
        C(deploys) (in order: C(host), C(task), C(failed), C(ignored), C(changed), C(msg) and
        the module''s C(deploy) dictionary as it returned it), C(unreachable) (host: message)
        and C(stats) (host: C(ok), C(changed), C(unreachable), C(failed), C(skipped),
        C(rescued), C(ignored), as the play recap counts them).'
    type: path
    default: ~/.local/state/ytempire/deploys
    env:
      - name: YTEMPIRE_DEPLOY_RECORD_DIR
    ini:
      - section: callback_deploy_report
        key: record_dir
  slack_webhook_url:
    description:
      - A Slack incoming-webhook URL that overrides the one the playbook gives.
      - Without it, the URL is the run-level custom stat C(ytempire_slack_webhook_url)
        (C(ansible.builtin.set_stats) with C(per_host=false)); empty or missing posts nothing.
      - The URL is a secret. Messages name only its scheme and host.
    type: str
    env:
      - name: YTEMPIRE_SLACK_WEBHOOK_URL
    ini:
      - section: callback_deploy_report
        key: slack_webhook_url
  slack_timeout:
    description: Seconds the Slack post may take (connecting and answering) before it is given up.
    type: float
    default: 5
    env:
      - name: YTEMPIRE_SLACK_TIMEOUT
    ini:
      - section: callback_deploy_report
        key: slack_timeout
notes:
  - The plugin disables itself with a warning when C(slack_timeout) is not positive or
    C(record_dir) exists and is not a directory.
  - 'The Slack post is C({"text": ...}) over HTTPS with the system''s CA store (Python''s
    default SSL context) and the C(https_proxy)/C(no_proxy) environment; a failure to post (an
    HTTP error, a refused connection, a timeout, a bad URL) is a warning naming the error.'
  - A result counts when its C(deploy) (or a loop item's) is a dictionary with the keys
    C(action) and C(result); results of C(debug) tasks never count.
  - A task that runs C(blue_green) with C(no_log) hides its C(deploy) dictionary from every
    callback; it is not reported, and the plugin warns.
  - C(set_stats) with the default C(aggregate=true) joins a string set twice (or once per host
    of the play) into one; set the webhook with C(aggregate=false) and C(run_once=true). A value
    holding several URLs is refused with a warning.
"""

EXAMPLES = r"""
# ansible.cfg
# [defaults]
# callback_plugins = plugins/callback
# callbacks_enabled = deploy_report
#
# [callback_deploy_report]
# record_dir = ~/.local/state/ytempire/deploys

# In the deploy playbook, before the blue_green task:
- name: Name the Slack webhook of the run
  ansible.builtin.set_stats:
    data:
      ytempire_slack_webhook_url: "{{ vault_slack_webhook_url | default('') }}"
    per_host: false
    aggregate: false
  run_once: true
  no_log: true
"""

import http.client
import json
import os
import re
import ssl
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ansible import constants as C
from ansible.plugins.callback import CallbackBase

if TYPE_CHECKING:
    from ansible.executor.stats import AggregateStats
    from ansible.executor.task_result import CallbackTaskResult
    from ansible.playbook import Playbook

RECORD_FORMAT = 1
DEFAULT_RECORD_DIR = "~/.local/state/ytempire/deploys"  # DOCUMENTATION's record_dir default
DEBUG_ACTIONS = ("debug", "ansible.builtin.debug", "ansible.legacy.debug")
WEBHOOK_STAT = "ytempire_slack_webhook_url"
MESSAGE_LIMIT = 300
RESULT_COLORS = {
    "succeeded": C.COLOR_OK,
    "unchanged": C.COLOR_OK,
    "reverted": C.COLOR_WARN,
    "refused": C.COLOR_ERROR,
    "failed": C.COLOR_ERROR,
}


def iso(moment: datetime) -> str:
    """A UTC time as the record writes it: 2026-12-02T02:31:00.120Z."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def redact_url(url: str) -> str:
    """The URL's scheme and host (with its port), which a message may name: never its user,
    path or query, which hold a webhook's token."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "<an unparsable URL>"
    if not parts.scheme or not host:
        return "<a URL without a scheme and host>"
    netloc = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{netloc}" + (f":{port}" if port else "")


def _file_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text) or "_"


def is_deploy(value: object) -> bool:
    """Whether `value` is blue_green's deploy dictionary: a mapping with an action and a result."""
    return isinstance(value, Mapping) and "action" in value and "result" in value


def run_hosts(deploys: list[dict[str, Any]], unreachable: Mapping[str, str]) -> list[str]:
    """The hosts a report names, in the order the run met them."""
    return list(dict.fromkeys([*(entry["host"] for entry in deploys), *unreachable]))


def record_name(started: datetime, deploys: list[dict[str, Any]], unreachable: Mapping) -> str:
    """`<start>-<action>-<host>.json`, as DOCUMENTATION's record_dir describes it."""
    actions = [_text(entry["deploy"].get("action"), "none") for entry in deploys]
    action = "+".join(dict.fromkeys(actions)) or "unreachable"
    hosts = run_hosts(deploys, unreachable)
    host = hosts[0] if len(hosts) == 1 else f"{len(hosts)}-hosts"
    stamp = started.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{_file_part(action)}-{_file_part(host)}.json"


def _text(value: object, missing: str = "-") -> str:
    if value is None or value == "":
        return missing
    return " ".join(str(value).split())


def _seconds(value: object, digits: int = 1, unit: str = " s") -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return f"{value:.{digits}f}{unit}"


def _message(entry: Mapping[str, Any]) -> str | None:
    """Why a deploy failed or was refused: the module's deploy message, else a failed task's msg."""
    message = entry["deploy"].get("message") or (entry["msg"] if entry["failed"] else None)
    return _text(message) if message else None


def _result(entry: Mapping[str, Any]) -> str:
    return _text(entry["deploy"].get("result"), "failed" if entry["failed"] else "unknown")


def _steps_table(steps: object) -> list[str]:
    if not isinstance(steps, list):
        return []
    rows = [
        (
            _text(step.get("name")),
            _seconds(step.get("seconds"), 2, "") or "-",
            "yes" if step.get("changed") else "no",
            _text(step.get("detail"), ""),
        )
        for step in steps
        if isinstance(step, Mapping)
    ]
    if not rows:
        return []
    rows.insert(0, ("step", "seconds", "changed", "detail"))
    name_width = max(len(row[0]) for row in rows)
    seconds_width = max(len(row[1]) for row in rows)
    return [
        f"  {name:<{name_width}}  {seconds:>{seconds_width}}  {changed:<7}  {detail}".rstrip()
        for name, seconds, changed, detail in rows
    ]


def _deploy_block(entry: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    deploy = entry["deploy"]
    result = _result(entry)
    head = (
        f"{entry['host']}: {_text(deploy.get('action'), 'unknown action')} "
        f"{_text(deploy.get('from_color'))} -> {_text(deploy.get('to_color'))}: {result}"
    )
    if entry["ignored"]:
        head += " (failure ignored)"
    image, image_id = _text(deploy.get("image")), _text(deploy.get("image_id"), "")
    if image_id:
        image = f"{image} ({image_id})" if deploy.get("image") else image_id
    total = _seconds(deploy.get("duration_seconds")) or "-"
    switch = _seconds(deploy.get("switch_seconds"))
    rows = [
        ("image", image),
        ("previous", _text(deploy.get("previous_image"))),
        ("time", f"{total} total, " + (f"switch {switch}" if switch else "no switch")),
        ("started", _text(deploy.get("started"))),
        ("server record", _text(deploy.get("record"))),
    ]
    lines: list[tuple[str, str | None]] = [(head, RESULT_COLORS.get(result))]
    lines += [(f"  {label:<14} {value}", None) for label, value in rows]
    lines += [(row, None) for row in _steps_table(deploy.get("steps"))]
    if message := _message(entry):
        lines.append((f"  message: {message}", RESULT_COLORS.get(result)))
    return lines


def summary_lines(record: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """The console summary: a banner, then one block per host; (text, color) per line."""
    title = f"DEPLOY REPORT [{record['playbook']}] "
    lines: list[tuple[str, str | None]] = [(title + "*" * max(3, 79 - len(title)), None)]
    for host in run_hosts(record["deploys"], record["unreachable"]):
        for entry in record["deploys"]:
            if entry["host"] == host:
                lines += _deploy_block(entry)
        if host in record["unreachable"]:
            message = f"{host}: UNREACHABLE: {_text(record['unreachable'][host])}"
            lines.append((message, C.COLOR_UNREACHABLE))
    return lines


def slack_text(record: Mapping[str, Any]) -> str:
    """The Slack message: one line per deploy result and per unreachable host."""
    lines = [f"YTEMPIRE {record['playbook']} (started {record['started']})"]
    for entry in record["deploys"]:
        deploy = entry["deploy"]
        line = (
            f"{entry['host']}: {_text(deploy.get('action'), 'unknown action')} "
            f"{_text(deploy.get('from_color'))} -> {_text(deploy.get('to_color'))}, "
            f"{_text(deploy.get('image'), 'no image')}: {_result(entry)}"
        )
        if total := _seconds(deploy.get("duration_seconds")):
            line += f" in {total}"
        if switch := _seconds(deploy.get("switch_seconds")):
            line += f" (switch {switch})"
        if message := _message(entry):
            line += f": {message[:MESSAGE_LIMIT]}"
        lines.append(line)
    for host, message in record["unreachable"].items():
        lines.append(f"{host}: unreachable: {_text(message)[:MESSAGE_LIMIT]}")
    return "\n".join(lines)


class RecordWriter:
    """Writes a run's record into one directory: mode 0700 when it creates it, files 0600,
    each through a temporary file and a rename, so a reader never sees half a record."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _ensure_directory(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            if not self.directory.is_dir():
                raise NotADirectoryError(
                    f"{self.directory} exists and is not a directory"
                ) from None
        else:
            os.chmod(self.directory, 0o700)

    def _free_path(self, name: str) -> Path:
        stem, suffix = os.path.splitext(name)
        path, number = self.directory / name, 0
        while path.exists():
            number += 1
            path = self.directory / f"{stem}-{number}{suffix}"
        return path

    def write(self, name: str, record: Mapping[str, Any]) -> Path:
        """Write `record` as `name` (or `name` with -1, -2, ... when taken); its path."""
        self._ensure_directory()
        text = json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n"
        path = self._free_path(name)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                os.fchmod(stream.fileno(), 0o600)
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return path


class NotificationError(Exception):
    """A Slack post that did not happen; its text never holds the webhook's path or token."""


class SlackNotifier:
    """Posts `{"text": ...}` to a Slack incoming webhook with the default SSL context."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.where = redact_url(url)

    def _scrub(self, text: str) -> str:
        """`text` without the URL, its path and query, and none of its longer path segments."""
        parts = urlsplit(self.url)
        secrets = [self.url, parts.path, parts.query, repr(parts.path)[1:-1]]
        secrets += [segment for segment in parts.path.split("/") if len(segment) >= 4]
        for secret in sorted(filter(None, secrets), key=len, reverse=True):
            text = text.replace(secret, "<redacted>")
        return text

    def post(self, text: str) -> int:
        """Post `text`; the HTTP status. Raises NotificationError saying what went wrong."""
        try:
            parts = urlsplit(self.url)
            usable = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            usable = False
        if not usable:
            raise NotificationError(f"the webhook ({self.where}) is not an http(s) URL with a host")
        request = urllib.request.Request(  # noqa: S310  the scheme is http(s), checked above
            self.url,
            data=json.dumps({"text": text}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        context = ssl.create_default_context()
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=context) as answer:  # noqa: S310
                answer.read()
                return answer.status
        except urllib.error.HTTPError as error:
            error.close()
            reason = f"HTTP {error.code} {self._scrub(str(error.reason))}"
            raise NotificationError(f"the post to {self.where} failed: {reason}") from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, TimeoutError):
                raise self._timed_out() from None
            reason = self._scrub(str(error.reason))
            raise NotificationError(f"the post to {self.where} failed: {reason}") from None
        except TimeoutError:
            raise self._timed_out() from None
        except (OSError, ValueError, http.client.HTTPException) as error:
            reason = f"{type(error).__name__}: {self._scrub(str(error))}"
            message = f"the post to {self.where} failed: {reason}"
            raise NotificationError(message) from None

    def _timed_out(self) -> NotificationError:
        return NotificationError(f"{self.where} did not answer within {self.timeout:g} s")


class CallbackModule(CallbackBase):
    """Collects deploy results and unreachable hosts; reports them when the run ends."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "deploy_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display: Any = None) -> None:
        super().__init__(display=display)
        self._playbooks: list[str] = []
        self._started: datetime | None = None
        self._deploys: list[dict[str, Any]] = []
        self._unreachable: dict[str, str] = {}
        self._writer = RecordWriter(Path(DEFAULT_RECORD_DIR).expanduser())
        self._webhook_override = ""
        self._timeout = 5.0

    def set_options(self, task_keys=None, var_options=None, direct=None) -> None:
        super().set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        record_dir = Path(self.get_option("record_dir"))
        self._writer = RecordWriter(record_dir)
        self._webhook_override = self.get_option("slack_webhook_url") or ""
        self._timeout = self.get_option("slack_timeout")
        if not self._timeout > 0:
            self._disable(f"slack_timeout is {self._timeout}; give a positive number of seconds")
        elif record_dir.exists() and not record_dir.is_dir():
            self._disable(f"record_dir {record_dir} exists and is not a directory")

    def _disable(self, reason: str) -> None:
        self.disabled = True
        self._display.warning(f"deploy_report: disabled, {reason}.")

    def v2_playbook_on_start(self, playbook: Playbook) -> None:
        self._playbooks.append(str(playbook._file_name))
        if self._started is None:
            self._started = datetime.now(UTC)

    def v2_runner_on_ok(self, result: CallbackTaskResult) -> None:
        self._collect(result, failed=False, ignored=False)

    def v2_runner_on_failed(self, result: CallbackTaskResult, ignore_errors: bool = False) -> None:
        self._collect(result, failed=True, ignored=ignore_errors)

    def v2_runner_on_unreachable(self, result: CallbackTaskResult) -> None:
        # Only the deploy's own task: the plugin is enabled for every playbook,
        # and a site.yml run that loses a host is not a deploy.
        if not str(result.task.action or "").endswith("blue_green"):
            return
        self._unreachable[result.host.get_name()] = _text(result.result.get("msg"), "unreachable")

    def _collect(self, result: CallbackTaskResult, failed: bool, ignored: bool) -> None:
        """Keep the result's deploy dictionary, or each of a loop's items' ones."""
        data, action = result.result, str(result.task.action or "")
        if action in DEBUG_ACTIONS:
            return  # `debug: var=deploy` shows a deploy that its own task reported
        if "censored" in data and action.rsplit(".", 1)[-1] == "blue_green":
            self._display.warning(
                f"deploy_report: the task {result.task_name!r} on {result.host.get_name()} has "
                "no_log, which hides its deploy result; it is not reported"
            )
            return
        if is_deploy(data.get("deploy")):
            items = [(data, failed)]
        else:
            loop = data.get("results") if isinstance(data.get("results"), list) else []
            items = [(item, bool(item.get("failed"))) for item in loop if isinstance(item, Mapping)]
        for item, item_failed in items:
            if not is_deploy(item.get("deploy")):
                continue
            msg = item.get("msg")
            self._deploys.append(
                {
                    "host": result.host.get_name(),
                    "task": result.task_name,
                    "failed": item_failed,
                    "ignored": ignored and item_failed,
                    "changed": bool(item.get("changed")),
                    "msg": msg if isinstance(msg, str) else None,
                    "deploy": dict(item["deploy"]),
                }
            )

    def v2_playbook_on_stats(self, stats: AggregateStats) -> None:
        if not self._deploys and not self._unreachable:
            return
        started = self._started or datetime.now(UTC)
        record = self._record(stats, started)
        path: Path | None = None
        try:
            path = self._writer.write(
                record_name(started, self._deploys, self._unreachable), record
            )
        except (OSError, TypeError, ValueError) as error:
            self._display.warning(
                f"deploy_report: the deploy record was not written to {self._writer.directory}: "
                f"{error}"
            )
        for text, color in summary_lines(record):
            self._display.display(text, color=color)
        if path is not None:
            self._display.display(f"deploy record: {path}")
        self._notify(stats, record)

    def _record(self, stats: AggregateStats, started: datetime) -> dict[str, Any]:
        names = [os.path.basename(playbook) for playbook in self._playbooks]
        return {
            "format": RECORD_FORMAT,
            "playbook": ", ".join(names) or "-",
            "playbook_paths": [os.path.abspath(playbook) for playbook in self._playbooks],
            "started": iso(started),
            "ended": iso(datetime.now(UTC)),
            "deploys": self._deploys,
            "unreachable": self._unreachable,
            "stats": {host: self._recap(stats, host) for host in sorted(stats.processed)},
        }

    @staticmethod
    def _recap(stats: AggregateStats, host: str) -> dict[str, int]:
        counts = stats.summarize(host)
        return {
            "ok": counts["ok"],
            "changed": counts["changed"],
            "unreachable": counts["unreachable"],
            "failed": counts["failures"],
            "skipped": counts["skipped"],
            "rescued": counts["rescued"],
            "ignored": counts["ignored"],
        }

    def _webhook(self, stats: AggregateStats) -> str:
        """The webhook URL: the option, else the run-level custom stat; "" for none."""
        if self._webhook_override:
            return self._webhook_override
        custom = stats.custom if isinstance(stats.custom, Mapping) else {}
        value = (custom.get("_run") or {}).get(WEBHOOK_STAT)
        per_host = [v for k, v in custom.items() if k != "_run" and isinstance(v, Mapping)]
        if value is None and any(WEBHOOK_STAT in values for values in per_host):
            raise NotificationError(f"{WEBHOOK_STAT} is set per host; set it with per_host: false")
        if value is None or value == "":
            return ""
        if not isinstance(value, str):
            raise NotificationError(f"{WEBHOOK_STAT} is a {type(value).__name__}, not a URL")
        if (count := value.count("://")) > 1:
            raise NotificationError(
                f"{WEBHOOK_STAT} holds {count} URLs run together (set_stats aggregates strings): "
                "set it once, with aggregate: false and run_once: true"
            )
        return value

    def _notify(self, stats: AggregateStats, record: Mapping[str, Any]) -> None:
        try:
            url = self._webhook(stats)
            if not url:
                return
            notifier = SlackNotifier(url, self._timeout)
            notifier.post(slack_text(record))
        except NotificationError as error:
            self._display.warning(f"deploy_report: no Slack message: {error}")
            return
        self._display.display(f"deploy report posted to Slack ({notifier.where})")
