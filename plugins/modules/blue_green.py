#!/usr/bin/python
# SPDX-License-Identifier: MIT
"""Switch the platform's API and worker between the blue and green colors."""

from __future__ import annotations

DOCUMENTATION = r"""
module: blue_green
short_description: Deploy an image to the inactive color, switch nginx to it, or roll back
description:
  - Runs on the server. Owns the blue-green switch of ops guide §2.2 and §2.3 on the
    Compose project the stack role made, and the nginx upstream file the nginx role
    wrote first.
  - C(state=deployed) takes a lock, pulls the image (or loads it from an archive on
    the server), checks that the serving color can run against the schema the new
    image migrates to, starts the inactive color's API, waits until C(/health/ready)
    and C(/health) answer 200, checks the new upstream file with nginx's test in a
    staging copy, hands the worker over (the old worker finishes or requeues its job
    within O(drain_timeout), only then the new one starts, so that a GPU never holds two),
    renames the upstream file into place and reloads nginx (in-flight requests on the
    old color complete), confirms through nginx that the new color answers, watches
    it for O(watch_seconds) and switches back by itself when it fails, then records
    C(current_env) and C(previous_env) and schedules the old color's retirement with
    a transient systemd timer.
  - C(state=active) makes O(color) serve again (the rollback). It reuses the retained
    container, or starts it again from the color's tag after it was retired and
    pruned, switches nginx first and hands the worker over after.
  - nginx's upstream file is what serves, so it is the truth when it and
    C(current_env) disagree (a run killed after the switch), and the next run finishes
    that deploy before it does anything else.
  - Each color's image keeps a per-color tag (C(<repository>:blue), C(<repository>:green)),
    which the Docker prune timer keeps.
  - Every run leaves a JSON record on the server and node exporter textfile metrics.
options:
  state:
    description:
      - C(deployed) puts O(image) on the inactive color and switches to it.
      - C(active) makes O(color) serve.
    type: str
    choices: [deployed, active]
    default: deployed
  image:
    description: The image reference to deploy (C(state=deployed)).
    type: str
  image_archive:
    description: A C(docker save) archive on the server holding O(image); loaded instead of pulled.
    type: path
  pull:
    description: Pull O(image) C(always), only when C(missing), or C(never) (then it must be there).
    type: str
    choices: [always, missing, never]
    default: always
  color:
    description: The color to make active (C(state=active)); C(previous) reads O(previous_env_file).
    type: str
    choices: [blue, green, previous]
  project_dir:
    description: The Compose project (its C(.env) names the Compose files).
    type: path
    default: /opt/ytempire
  current_env_file:
    description: The file naming the active color (ops guide Appendix B).
    type: path
    default: /opt/ytempire/current_env
  previous_env_file:
    description: The file naming the color that served before.
    type: path
    default: /opt/ytempire/previous_env
  ports:
    description: Loopback port of each color's API.
    type: dict
    default: {green: 8081, blue: 8082}
  upstream_file:
    description: The nginx file naming the active color's upstream.
    type: path
    default: /etc/nginx/ytempire/upstream-api.conf
  upstream_name:
    description: The upstream block in O(upstream_file).
    type: str
    default: ytempire_api
  upstream_keepalive:
    description: Idle keep-alive connections nginx keeps to the upstream.
    type: int
    default: 32
  nginx_check_command:
    description: Tests nginx's configuration with CANDIDATE in place of the live file DEST.
    type: path
    default: /usr/local/sbin/ytempire-nginx-check
  nginx_reload_command:
    description: Reloads nginx gracefully.
    type: list
    elements: str
    default: [systemctl, reload, nginx]
  public_url:
    description: nginx's HTTPS address on the server, to confirm which color answers.
    type: str
    default: https://127.0.0.1
  access_log:
    description: nginx's access log in the C(ytempire) format, for the 5xx ratio of the watch.
    type: path
    default: /var/log/nginx/ytempire.access.log
  health_paths:
    description: Paths of the new color that must answer 200 before it gets traffic.
    type: list
    elements: str
    default: [/health/ready, /health]
  health_retries:
    description: Health checks before the new color counts as failed (ops guide §2.2, 60 x 5 s).
    type: int
    default: 60
  health_delay:
    description: Seconds between health checks.
    type: float
    default: 5
  drain_timeout:
    description: Seconds the old worker may take to finish its job before it is killed (requeued).
    type: int
    default: 600
  watch_seconds:
    description: Seconds to watch the new color after the switch (0 does not watch).
    type: float
    default: 60
  watch_interval:
    description: Seconds between looks during the watch.
    type: float
    default: 2
  watch_max_error_ratio:
    description: Largest share of 5xx answers through nginx the new color may give during the watch.
    type: float
    default: 0.05
  watch_min_answers:
    description: Answers needed before the 5xx share counts (a handful of requests proves nothing).
    type: int
    default: 20
  watch_max_unhealthy:
    description: Failed health checks in a row during the watch that make it switch back.
    type: int
    default: 3
  retire_after:
    description: Seconds after the switch when the old color is stopped (0 leaves it running).
    type: int
    default: 300
  retire_command:
    description: The command the retire timer runs with the color as its argument.
    type: path
    default: /usr/local/sbin/ytempire-retire
  lock_file:
    description: The lock a deploy or rollback holds; a second one is refused while it is held.
    type: path
    default: /run/lock/ytempire-deploy.lock
  record_dir:
    description: Where each run's JSON record goes on the server.
    type: path
    default: /var/lib/ytempire/deploys
  textfile_dir:
    description: node exporter's textfile collector directory (empty writes no metrics).
    type: path
    default: /var/lib/prometheus/node-exporter
  compose_project:
    description: The Compose project name (its containers' label).
    type: str
    default: ytempire
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
    details: Deploying the image the active color runs, or activating that color, changes nothing.
notes:
  - One deploy at a time per server, by an flock on O(lock_file), released however the run ends.
"""

EXAMPLES = r"""
- name: Deploy a new image
  blue_green:
    image: registry.example.com/ytempire/ytvideo:1.4.2

- name: Roll back to the color that served before
  blue_green:
    state: active
    color: "{{ lookup('file', '/opt/ytempire/previous_env') }}"
"""

RETURN = r"""
deploy:
  description:
    - What the run did, also on failure. C(action) is C(deploy), C(rollback) or C(none);
      C(result) is C(succeeded), C(unchanged), C(failed), C(reverted) (the watch switched
      back) or C(refused) (lock, schema, bad state).
    - C(steps) lists each step with its seconds, whether it changed something and what it found.
    - C(switch_seconds) is the time from the rename of the upstream file to the first
      answer from the new color through nginx; C(switched_at) the rename's epoch time.
  type: dict
  returned: always
  sample:
    action: deploy
    result: succeeded
    from_color: blue
    to_color: green
    image: registry.example.com/ytempire/ytvideo:1.4.2
    image_id: sha256:0123
    previous_image: registry.example.com/ytempire/ytvideo:1.4.1
    duration_seconds: 41.2
    switch_seconds: 0.4
    steps: [{name: lock, seconds: 0.0, changed: false, detail: held by pid 4242}]
    record: /var/lib/ytempire/deploys/20261202T023100Z-deploy.json
"""

import fcntl  # noqa: E402  Ansible module layout: DOCUMENTATION precedes imports
import json  # noqa: E402
import os  # noqa: E402
import ssl  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.blue_green import (  # noqa: E402
    COLORS,
    Outcome,
    StateError,
    Step,
    WatchSample,
    color_tag,
    count_statuses,
    other,
    parse_color,
    parse_color_file,
    parse_upstream,
    render_color_file,
    render_metrics,
    render_upstream,
    schema_check,
    watch_verdict,
)


class Refused(Exception):
    """Nothing was changed: the run may not go on (lock, schema, bad state, bad input)."""


class Failed(Exception):
    """A step failed; what it changed was put back."""


def utcnow() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def write_atomic(path: str, text: str, mode: int = 0o644) -> None:
    """Write to a temporary name in the same directory, then rename over path."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class Switch:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.p = module.params
        self.check = module.check_mode
        self.ports = {c: int(self.p["ports"][c]) for c in COLORS}
        self.outcome = Outcome(action="none", started=utcnow())
        self.begin = time.monotonic()
        self.diffs: list[dict] = []
        self.lock_fd: int | None = None

    # --- plumbing -------------------------------------------------------------------

    @contextmanager
    def step(self, name: str):
        s = Step(name)
        start = time.monotonic()
        self.outcome.steps.append(s)
        try:
            yield s
        finally:
            s.seconds = time.monotonic() - start

    def run(self, args: list[str], check: bool = True) -> tuple[int, str, str]:
        rc, out, err = self.module.run_command(args, cwd=self.p["project_dir"])
        if check and rc != 0:
            raise Failed(f"{' '.join(args)} failed ({rc}): {(err or out).strip()[-2000:]}")
        return rc, out, err

    # `up` without --no-deps: --no-deps drops depends_on from the service's config
    # hash (docker/compose#12069), and the next plain `up` (the stack role, the boot
    # unit) would recreate the serving color. PostgreSQL and Redis already run,
    # unchanged, so `up SERVICE` leaves them as they are.
    def compose(self, *args: str, check: bool = True) -> tuple[int, str, str]:
        return self.run(
            ["docker", "compose", "--project-directory", self.p["project_dir"], *args], check=check
        )

    def color_file(self, color: str) -> str:
        return os.path.join(self.p["project_dir"], f"docker-compose.{color}.yml")

    def ps(self, service: str, template: str) -> str | None:
        """`docker ps --all` of the project's container for service, formatted by
        template (one call: every docker call is on a rollback's clock), or None."""
        _, out, _ = self.run(
            [
                "docker",
                "ps",
                "--all",
                "--format",
                template,
                "--filter",
                f"label=com.docker.compose.project={self.p['compose_project']}",
                "--filter",
                f"label=com.docker.compose.service={service}",
            ]
        )
        lines = out.split()
        return lines[0] if lines else None

    def container_id(self, service: str) -> str | None:
        return self.ps(service, "{{.ID}}")

    def container(self, service: str) -> dict | None:
        """docker inspect of the project's container for service, or None."""
        cid = self.container_id(service)
        if cid is None:
            return None
        _, out, _ = self.run(["docker", "inspect", cid])
        return json.loads(out)[0]

    def running(self, service: str) -> bool:
        return self.ps(service, "{{.State}}") == "running"

    def image_info(self, ref: str) -> dict | None:
        rc, out, _ = self.run(["docker", "image", "inspect", ref], check=False)
        return json.loads(out)[0] if rc == 0 else None

    def http_status(self, url: str, timeout: float = 3) -> tuple[int | None, dict[str, str]]:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the server's own nginx, by address
        try:
            with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:  # noqa: S310
                return answer.status, {k.lower(): v for k, v in answer.headers.items()}
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}
        except (OSError, ValueError):
            return None, {}

    def healthy(self, color: str) -> tuple[bool, str]:
        for path in self.p["health_paths"]:
            status, _ = self.http_status(f"http://127.0.0.1:{self.ports[color]}{path}")
            if status != 200:
                return False, f"{path} answered {status or 'nothing'}"
        return True, "healthy"

    # --- state ----------------------------------------------------------------------

    def observe(self) -> dict:
        upstream = read(self.p["upstream_file"])
        if upstream is None:
            raise Refused(f"{self.p['upstream_file']} is missing: the nginx role writes it first")
        try:
            serving = parse_upstream(upstream, self.p["upstream_name"], self.ports)
            current = parse_color(read(self.p["current_env_file"]), self.p["current_env_file"])
            previous = parse_color(read(self.p["previous_env_file"]), self.p["previous_env_file"])
            files = {}
            for color in COLORS:
                text = read(self.color_file(color))
                if text is None:
                    raise StateError(
                        f"{self.color_file(color)} is missing: the stack role writes it first"
                    )
                image, meta = parse_color_file(text)
                # source: the reference the color's image came from (the stack
                # role's first files name it directly).
                files[color] = {"text": text, "image": image, "source": meta.get("source") or image}
        except StateError as exc:
            raise Refused(str(exc)) from exc
        if current is None:
            raise Refused(
                f"{self.p['current_env_file']} is missing: the stack role writes it first"
            )
        return {
            "serving": serving,
            "current": current,
            "previous": previous,
            "upstream": upstream,
            "files": files,
        }

    def running_image(self, color: str) -> str | None:
        info = self.container(f"api-{color}")
        return info["Image"] if info else None

    # --- steps ------------------------------------------------------------------------

    def lock(self) -> None:
        with self.step("lock") as s:
            if self.check:
                s.detail = "not taken in check mode"
                return
            os.makedirs(os.path.dirname(self.p["lock_file"]), exist_ok=True)
            fd = os.open(self.p["lock_file"], os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 4096).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise Refused(
                    f"another deploy or rollback is running on this server ({holder})"
                ) from None
            os.ftruncate(fd, 0)
            os.write(
                fd,
                json.dumps(
                    {
                        "pid": os.getpid(),
                        "action": self.outcome.action,
                        "image": self.p.get("image"),
                        "since": self.outcome.started,
                    }
                ).encode(),
            )
            self.lock_fd = fd
            s.detail = f"held by pid {os.getpid()}"

    def get_image(self) -> dict:
        ref = self.p["image"]
        with self.step("image") as s:
            archive = self.p["image_archive"]
            if archive:
                wanted = archive_image_id(archive, ref)
                present = self.image_info(ref)
                if present and present["Id"] == wanted:
                    s.detail = f"{ref} is already loaded"
                elif self.check:
                    s.changed, s.detail = True, f"would load {archive}"
                else:
                    self.run(["docker", "load", "--input", archive])
                    s.changed, s.detail = True, f"loaded {archive}"
            elif self.p["pull"] == "always" or (
                self.p["pull"] == "missing" and not self.image_info(ref)
            ):
                before = self.image_info(ref)
                if not self.check:
                    self.run(["docker", "pull", "--quiet", ref])
                after = self.image_info(ref)
                s.changed = bool(after and (not before or before["Id"] != after["Id"]))
                s.detail = f"pulled {ref}"
            info = self.image_info(ref)
            if info is None:
                if self.check:
                    s.detail += " (check mode: not on the server yet)"
                    return {"Id": None, "Config": {"Labels": {}}}
                raise Refused(f"{ref} is not on the server (pull={self.p['pull']})")
            s.detail += f": {info['Id'][:19]}"
            return info

    def check_schema(self, serving: str, new: dict) -> None:
        with self.step("schema") as s:
            old_id = self.running_image(serving)
            old = self.image_info(old_id) if old_id else None
            verdict = schema_check(
                (old or {}).get("Config", {}).get("Labels") or {},
                new.get("Config", {}).get("Labels") or {},
            )
            s.detail = verdict.reason
            if not verdict.ok:
                raise Refused(f"schema: {verdict.reason}")

    def put_image_on(self, color: str, ref: str, info: dict, state: dict) -> tuple[str, str | None]:
        """Tag the image for color and write its color file; returns what to put back on failure."""
        text = state["files"][color]["text"]
        with self.step("prepare") as s:
            tag = color_tag(ref, color)
            old_tag_id = (self.image_info(tag) or {}).get("Id")
            new_text = render_color_file(color, tag, ref, info["Id"] or "", f"deployed {utcnow()}")
            self.diff(self.color_file(color), text, new_text)
            if not self.check:
                self.run(["docker", "tag", info["Id"], tag])
                write_atomic(self.color_file(color), new_text)
            s.changed, s.detail = True, f"{tag} -> {(info['Id'] or '?')[:19]}"
            return text, old_tag_id

    def retain(self, color: str, state: dict) -> None:
        """Tag the image color runs with its color, so that the prune keeps it for a
        rollback (the stack role's first color files name the source image)."""
        with self.step("retain") as s:
            tag = color_tag(state["files"][color]["source"], color)
            running = self.running_image(color)
            if running is None:
                s.detail = f"api-{color} has no container"
                return
            if (self.image_info(tag) or {}).get("Id") == running:
                s.detail = f"{tag} is what {color} runs"
                return
            if not self.check:
                self.run(["docker", "tag", running, tag])
            s.changed, s.detail = True, f"{tag} -> {running[:19]} (what {color} runs)"

    def restore_color(self, color: str, ref: str, saved: tuple[str, str | None]) -> None:
        text, old_id = saved
        write_atomic(self.color_file(color), text)
        if old_id:
            self.run(["docker", "tag", old_id, color_tag(ref, color)], check=False)

    def start_api(self, color: str, stopped: bool = False) -> None:
        """Start color's API from its color file (recreated when that changed);
        stopped: the caller saw it was not running (a rollback skips two inspects)."""
        with self.step("start") as s:
            info = None if stopped else self.container(f"api-{color}")
            if self.check:
                s.changed, s.detail = True, f"would start api-{color}"
                return
            # create, then docker start: `up` waits about half a second for the
            # health of PostgreSQL and Redis, which run (the gate reads /health, which
            # checks both). create keeps the config hash that `up` computes, so the
            # stack role's and the boot unit's `up` leave the container as it is.
            self.compose("create", f"api-{color}")
            created = self.container_id(f"api-{color}")
            if created is None:
                raise Failed(f"docker compose create api-{color} left no container")
            self.run(["docker", "start", created])
            if stopped:
                s.changed = True
            else:
                after = self.container(f"api-{color}")
                s.changed = not info or info["Id"] != after["Id"] or not info["State"]["Running"]
            done = "started" if s.changed else "already running"
            s.detail = f"api-{color} {done} on port {self.ports[color]}"

    def gate(self, color: str, fast: bool = False) -> None:
        """health_retries checks health_delay apart; fast (a rollback, where every
        second counts) looks every 0.05 s within the same budget."""
        with self.step("health") as s:
            if self.check:
                s.detail = "skipped in check mode"
                return
            retries, delay = self.p["health_retries"], self.p["health_delay"]
            every = min(delay, 0.05) if fast else delay
            deadline = time.monotonic() + retries * delay
            why, attempt = "", 0
            while True:
                attempt += 1
                ok, why = self.healthy(color)
                if ok:
                    s.detail = f"healthy after {attempt} check(s)"
                    return
                if (not fast and attempt >= retries) or time.monotonic() + every > deadline:
                    break
                time.sleep(every)
            s.detail = f"not healthy after {attempt} checks: {why}"
            raise Failed(f"api-{color} did not become healthy ({retries} x {delay} s): {why}")

    def candidate(self, color: str) -> str:
        """The upstream file for color, tested with nginx in a staging copy."""
        with self.step("nginx-test") as s:
            text = render_upstream(
                self.p["upstream_name"],
                color,
                self.ports[color],
                self.p["upstream_keepalive"],
                utcnow(),
            )
            if self.check:
                s.detail = "skipped in check mode"
                return text
            fd, tmp = tempfile.mkstemp(prefix="upstream-", suffix=".conf")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(text)
                rc, out, err = self.run(
                    [self.p["nginx_check_command"], tmp, self.p["upstream_file"]], check=False
                )
            finally:
                os.unlink(tmp)
            if rc != 0:
                s.detail = (err or out).strip()[-1000:]
                raise Failed(
                    f"nginx -t refused the upstream file for {color}; "
                    f"nginx was not reloaded: {s.detail}"
                )
            s.detail = "nginx -t passed with the new upstream file"
            return text

    def handover(self, old: str, new: str) -> None:
        """Stop old's worker (it finishes or requeues its job), then start new's."""
        with self.step("worker") as s:
            stop, start = self.running(f"worker-{old}"), not self.running(f"worker-{new}")
            if self.check:
                s.changed = stop or start
                s.detail = (
                    f"would stop worker-{old}" * stop
                    + ", then " * (stop and start)
                    + (f"would start worker-{new}" * start)
                )
                return
            moved = []
            if stop:
                began = time.monotonic()
                self.compose("stop", "--timeout", str(self.p["drain_timeout"]), f"worker-{old}")
                moved.append(
                    f"worker-{old} drained and stopped in {time.monotonic() - began:.1f} s"
                )
            if start:
                self.compose("up", "--detach", f"worker-{new}")
                moved.append(f"worker-{new} started")
                time.sleep(1)
                if not self.running(f"worker-{new}"):
                    raise Failed(
                        f"worker-{new} does not stay up: see docker compose logs worker-{new}"
                    )
            s.changed = bool(moved)
            s.detail = "; ".join(moved) or f"worker-{new} already the only worker"

    def switch(self, color: str, text: str, before: str) -> None:
        with self.step("switch") as s:
            self.diff(self.p["upstream_file"], before, text)
            if self.check:
                s.changed, s.detail = True, f"would send traffic to {color}"
                return
            write_atomic(self.p["upstream_file"], text)
            renamed = time.monotonic()
            self.outcome.switched_at = time.time()
            rc, out, err = self.run(self.p["nginx_reload_command"], check=False)
            if rc != 0:
                write_atomic(self.p["upstream_file"], before)
                raise Failed(f"nginx reload failed, upstream file put back: {(err or out).strip()}")
            deadline = renamed + 15
            while time.monotonic() < deadline:
                status, headers = self.http_status(
                    f"{self.p['public_url'].rstrip('/')}/health/live", timeout=2
                )
                if status == 200 and headers.get("x-deployment-color") == color:
                    self.outcome.switch_seconds = time.monotonic() - renamed
                    s.changed = True
                    took = self.outcome.switch_seconds
                    s.detail = f"nginx sends traffic to {color} ({took:.2f} s after the rename)"
                    return
                time.sleep(0.05)
            raise Failed(f"after the reload nginx still does not answer from {color}")

    def watch(self, color: str) -> tuple[bool, str]:
        with self.step("watch") as s:
            if self.check or self.p["watch_seconds"] <= 0:
                s.detail = "skipped"
                return True, s.detail
            log = self.p["access_log"]
            offset = os.path.getsize(log) if os.path.exists(log) else 0
            upstream = f"127.0.0.1:{self.ports[color]}"
            samples: list[WatchSample] = []
            deadline = time.monotonic() + self.p["watch_seconds"]
            while True:
                ok, _ = self.healthy(color)
                lines: list[str] = []
                if os.path.exists(log):
                    with open(log, encoding="utf-8", errors="replace") as handle:
                        handle.seek(offset if os.path.getsize(log) >= offset else 0)
                        lines = handle.readlines()
                        offset = handle.tell()
                answers, errors = count_statuses(lines, upstream)
                samples.append(WatchSample(ok, answers, errors))
                verdict = watch_verdict(
                    samples,
                    self.p["watch_max_error_ratio"],
                    self.p["watch_min_answers"],
                    self.p["watch_max_unhealthy"],
                )
                if not verdict.ok or time.monotonic() >= deadline:
                    s.detail = (
                        f"{verdict.reason} ({len(samples)} looks in {self.p['watch_seconds']} s)"
                    )
                    return verdict.ok, verdict.reason
                time.sleep(self.p["watch_interval"])

    def record_state(self, current: str, previous: str | None) -> None:
        with self.step("record") as s:
            for path, color in (
                (self.p["current_env_file"], current),
                (self.p["previous_env_file"], previous),
            ):
                if color is None:
                    continue
                before = read(path)
                if (before or "").strip() != color:
                    self.diff(path, before or "", color + "\n")
                    if not self.check:
                        write_atomic(path, color + "\n")
                    s.changed = True
            s.detail = f"current_env {current}, previous_env {previous}"

    def timer_unit(self, color: str) -> str:
        return f"ytempire-retire-{color}"

    def cancel_retire(self, color: str) -> bool:
        """Stop color's pending retirement; True when its timer was active. One
        `systemctl show` when there is none (the transient units are gone once run)."""
        unit = self.timer_unit(color)
        units = [f"{unit}.timer", f"{unit}.service"]
        _, out, _ = self.run(
            ["systemctl", "show", "--property=LoadState,ActiveState", *units], check=False
        )
        # One block per unit; no output (systemctl failed) counts as loaded: stop anyway.
        shown = [
            dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            for block in out.strip().split("\n\n")
        ]
        active = shown[0].get("ActiveState") == "active"
        loaded = any(u.get("LoadState", "loaded") != "not-found" for u in shown)
        if loaded and not self.check:
            self.run(["systemctl", "stop", *units], check=False)
            self.run(["systemctl", "reset-failed", *units], check=False)
        return active

    def schedule_retire(self, old: str, new: str) -> None:
        with self.step("retire") as s:
            cancelled = self.cancel_retire(new)
            if self.p["retire_after"] <= 0:
                s.detail = f"{old} stays running (retire_after 0)"
                return
            if self.check:
                s.changed, s.detail = True, f"would retire {old} in {self.p['retire_after']} s"
                return
            self.cancel_retire(old)
            self.run(
                [
                    "systemd-run",
                    "--unit",
                    self.timer_unit(old),
                    "--on-active",
                    f"{self.p['retire_after']}s",
                    "--timer-property",
                    "AccuracySec=1s",
                    "--description",
                    f"Retire the {old} color of the platform",
                    self.p["retire_command"],
                    old,
                ]
            )
            s.changed = True
            s.detail = f"{self.timer_unit(old)}.timer stops {old} in {self.p['retire_after']} s"
            if cancelled:
                s.detail += f"; {new}'s pending retirement cancelled"

    def diff(self, path: str, before: str, after: str) -> None:
        if before != after:
            self.diffs.append(
                {"before_header": path, "after_header": path, "before": before, "after": after}
            )

    # --- the two jobs -------------------------------------------------------------------

    def finish_interrupted(self, state: dict) -> None:
        """nginx serves a color current_env does not name: a run stopped after its switch."""
        serving, current = state["serving"], state["current"]
        with self.step("recover") as s:
            s.changed = True
            s.detail = (
                f"nginx serves {serving} but current_env says {current}: finishing that switch"
            )
        self.handover(current, serving)
        ok, why = self.watch(serving)
        if not ok:
            self.revert(serving, current, state, None, None)
            raise Failed(
                f"{serving} failed its watch after the interrupted switch, back on {current}: {why}"
            )
        self.record_state(serving, current)
        self.schedule_retire(current, serving)
        state.update(current=serving, previous=current)

    def revert(self, bad: str, good: str, state: dict, ref: str | None, saved) -> None:
        with self.step("revert") as s:
            done = []
            if (
                self.running(f"api-{good}")
                or self.compose("up", "--detach", f"api-{good}", check=False)[0] == 0
            ):
                upstream = read(self.p["upstream_file"]) or ""
                if parse_upstream(upstream, self.p["upstream_name"], self.ports) != good:
                    text = render_upstream(
                        self.p["upstream_name"],
                        good,
                        self.ports[good],
                        self.p["upstream_keepalive"],
                        utcnow(),
                    )
                    write_atomic(self.p["upstream_file"], text)
                    self.run(self.p["nginx_reload_command"], check=False)
                    done.append(f"nginx back on {good}")
            if self.running(f"worker-{bad}"):
                self.compose(
                    "stop", "--timeout", str(self.p["drain_timeout"]), f"worker-{bad}", check=False
                )
                done.append(f"worker-{bad} stopped")
            if not self.running(f"worker-{good}"):
                self.compose("up", "--detach", f"worker-{good}", check=False)
                done.append(f"worker-{good} started")
            self.compose("stop", f"api-{bad}", check=False)
            done.append(f"api-{bad} stopped")
            if ref and saved:
                self.restore_color(bad, ref, saved)
                done.append(f"{bad}'s color file and tag put back")
            s.changed, s.detail = True, "; ".join(done)

    def deploy(self) -> None:
        o = self.outcome
        o.action, o.image = "deploy", self.p["image"]
        self.lock()
        state = self.observe()
        if state["serving"] != state["current"]:
            self.finish_interrupted(state)
        serving = state["serving"]
        target = other(serving)
        o.from_color, o.to_color = serving, target
        o.previous_image = state["files"][serving]["source"]
        info = self.get_image()
        o.image_id = info["Id"]
        if (
            info["Id"]
            and info["Id"] == self.running_image(serving)
            and self.running(f"api-{serving}")
        ):
            o.to_color = serving
            with self.step("compare") as s:
                s.detail = f"{serving} already runs {o.image}"
            self.handover(target, serving)
            o.result = "succeeded" if any(s.changed for s in o.steps) else "unchanged"
            return
        self.check_schema(serving, info)
        self.retain(serving, state)
        saved = self.put_image_on(target, o.image, info, state)
        try:
            self.start_api(target)
            self.gate(target)
            text = self.candidate(target)
            self.handover(serving, target)
        except Failed:
            if not self.check:
                self.revert(target, serving, state, o.image, saved)
            raise
        try:
            self.switch(target, text, state["upstream"])
        except Failed:
            self.revert(target, serving, state, o.image, saved)
            raise
        ok, why = self.watch(target)
        if not ok:
            self.revert(target, serving, state, o.image, saved)
            o.result = "reverted"
            raise Failed(
                f"{target} failed within the watch window and traffic is back on {serving}: {why}"
            )
        self.record_state(target, serving)
        self.schedule_retire(serving, target)
        o.result = "succeeded"

    def activate(self) -> None:
        o = self.outcome
        o.action = "rollback"
        self.lock()
        state = self.observe()
        color = self.p["color"]
        if color == "previous":
            if state["previous"] is None:
                raise Refused(
                    f"{self.p['previous_env_file']} is missing: no deploy to roll back yet"
                )
            color = state["previous"]
        serving = state["serving"]
        o.from_color, o.to_color = serving, color
        o.image, o.previous_image = (
            state["files"][color]["source"],
            state["files"][serving]["source"],
        )
        if serving == color:
            if state["current"] != color:
                self.finish_interrupted(state)
            else:
                self.handover(other(color), color)
            o.result = "succeeded" if any(s.changed for s in o.steps) else "unchanged"
            return
        cancelled = self.cancel_retire(color)
        # Every docker call from here to the switch is on the rollback's clock: each
        # state is looked up once.
        with self.step("retained") as s:
            image, source = state["files"][color]["image"], state["files"][color]["source"]
            tag = color_tag(source, color)
            running = self.running(f"api-{color}")
            if running:
                s.detail = f"api-{color} is still running (retained)"
            elif self.image_info(image) is not None:
                s.detail = f"api-{color} is retired; starting it again from {image}"
            else:
                tag_info = self.image_info(tag)
                if tag_info is None:
                    raise Refused(
                        f"neither {image} nor {tag} is on the server: {color} cannot be started"
                        " again"
                    )
                # The stack role's first file names the source image, which the prune removed.
                new_text = render_color_file(
                    color, tag, source, tag_info["Id"], f"restored {utcnow()}"
                )
                self.diff(self.color_file(color), state["files"][color]["text"], new_text)
                if not self.check:
                    write_atomic(self.color_file(color), new_text)
                s.changed, s.detail = True, f"{image} is gone; {color} runs its tag {tag}"
            if cancelled:
                s.detail += "; its pending retirement cancelled"
        if not running:
            self.start_api(color, stopped=True)
        if not self.check and (not running or not self.healthy(color)[0]):
            self.gate(color, fast=True)
        text = self.candidate(color)
        self.switch(color, text, state["upstream"])
        self.record_state(color, serving)
        self.handover(serving, color)
        self.schedule_retire(serving, color)
        o.result = "succeeded"

    # --- the record -------------------------------------------------------------------

    def save_record(self) -> None:
        o = self.outcome
        o.duration_seconds = time.monotonic() - self.begin
        # A run refused before it held the lock leaves no record here: it would
        # overwrite the running deploy's last-*.json (the controller keeps one).
        if self.check or o.action == "none" or (o.result == "refused" and self.lock_fd is None):
            return
        directory = self.p["record_dir"]
        os.makedirs(directory, mode=0o750, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        o.record = os.path.join(directory, f"{stamp}-{o.action}.json")
        record = {**o.as_dict(), "ended": time.time()}
        write_atomic(o.record, json.dumps(record, indent=2) + "\n", 0o640)
        write_atomic(
            os.path.join(directory, f"last-{o.action}.json"),
            json.dumps(record, indent=2) + "\n",
            0o640,
        )
        if self.p["textfile_dir"]:
            last = {}
            for action in ("deploy", "rollback"):
                text = read(os.path.join(directory, f"last-{action}.json"))
                if text:
                    last[action] = json.loads(text)
            try:
                active = parse_upstream(
                    read(self.p["upstream_file"]) or "", self.p["upstream_name"], self.ports
                )
            except StateError:
                active = None
            os.makedirs(self.p["textfile_dir"], exist_ok=True)
            write_atomic(
                os.path.join(self.p["textfile_dir"], "ytempire_deploy.prom"),
                render_metrics(last, active, time.time()),
            )


def archive_image_id(archive: str, ref: str) -> str:
    """The image id of ref in a docker save archive (its config's digest)."""
    try:
        with tarfile.open(archive) as tar:
            manifest = json.load(tar.extractfile("manifest.json"))
    except (OSError, KeyError, tarfile.TarError, ValueError) as exc:
        raise Refused(f"{archive} is not a docker save archive: {exc}") from exc
    for entry in manifest:
        if ref in (entry.get("RepoTags") or []):
            config = entry["Config"]
            return "sha256:" + os.path.basename(config).removesuffix(".json")
    tags = sorted(t for e in manifest for t in e.get("RepoTags") or [])
    raise Refused(
        f"{archive} does not hold {ref} (it holds {', '.join(tags) or 'no tagged image'})"
    )


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["deployed", "active"], "default": "deployed"},
            "image": {"type": "str"},
            "image_archive": {"type": "path"},
            "pull": {"type": "str", "choices": ["always", "missing", "never"], "default": "always"},
            "color": {"type": "str", "choices": [*COLORS, "previous"]},
            "project_dir": {"type": "path", "default": "/opt/ytempire"},
            "current_env_file": {"type": "path", "default": "/opt/ytempire/current_env"},
            "previous_env_file": {"type": "path", "default": "/opt/ytempire/previous_env"},
            "ports": {"type": "dict", "default": {"green": 8081, "blue": 8082}},
            "upstream_file": {"type": "path", "default": "/etc/nginx/ytempire/upstream-api.conf"},
            "upstream_name": {"type": "str", "default": "ytempire_api"},
            "upstream_keepalive": {"type": "int", "default": 32},
            "nginx_check_command": {
                "type": "path",
                "default": "/usr/local/sbin/ytempire-nginx-check",
            },
            "nginx_reload_command": {
                "type": "list",
                "elements": "str",
                "default": ["systemctl", "reload", "nginx"],
            },
            "public_url": {"type": "str", "default": "https://127.0.0.1"},
            "access_log": {"type": "path", "default": "/var/log/nginx/ytempire.access.log"},
            "health_paths": {
                "type": "list",
                "elements": "str",
                "default": ["/health/ready", "/health"],
            },
            "health_retries": {"type": "int", "default": 60},
            "health_delay": {"type": "float", "default": 5},
            "drain_timeout": {"type": "int", "default": 600},
            "watch_seconds": {"type": "float", "default": 60},
            "watch_interval": {"type": "float", "default": 2},
            "watch_max_error_ratio": {"type": "float", "default": 0.05},
            "watch_min_answers": {"type": "int", "default": 20},
            "watch_max_unhealthy": {"type": "int", "default": 3},
            "retire_after": {"type": "int", "default": 300},
            "retire_command": {"type": "path", "default": "/usr/local/sbin/ytempire-retire"},
            "lock_file": {"type": "path", "default": "/run/lock/ytempire-deploy.lock"},
            "record_dir": {"type": "path", "default": "/var/lib/ytempire/deploys"},
            "textfile_dir": {"type": "path", "default": "/var/lib/prometheus/node-exporter"},
            "compose_project": {"type": "str", "default": "ytempire"},
        },
        required_if=[("state", "deployed", ["image"]), ("state", "active", ["color"])],
        supports_check_mode=True,
    )
    p = module.params
    problems = []
    ports = p["ports"]
    if sorted(ports) != sorted(COLORS):
        problems.append(f"ports must name blue and green, not {', '.join(sorted(ports))}")
    else:
        for color, port in ports.items():
            if not str(port).isdigit() or not 0 < int(port) < 65536:
                problems.append(f"ports.{color} must be a port number, not {port!r}")
        if len({str(v) for v in ports.values()}) == 1:
            problems.append("ports.blue and ports.green must differ")
    for name in (
        "health_retries",
        "watch_min_answers",
        "watch_max_unhealthy",
        "upstream_keepalive",
    ):
        if p[name] < 1:
            problems.append(f"{name} must be at least 1, not {p[name]}")
    for name in (
        "health_delay",
        "watch_interval",
        "drain_timeout",
        "watch_seconds",
        "retire_after",
    ):
        if p[name] < 0:
            problems.append(f"{name} must not be negative, not {p[name]}")
    if not 0 <= p["watch_max_error_ratio"] <= 1:
        problems.append(
            f"watch_max_error_ratio must be between 0 and 1, not {p['watch_max_error_ratio']}"
        )
    if problems:
        module.fail_json(
            msg="; ".join(problems), deploy=Outcome(action="none", result="refused").as_dict()
        )

    job = Switch(module)
    failed = None
    try:
        job.deploy() if p["state"] == "deployed" else job.activate()
    except Refused as exc:
        job.outcome.result, failed = "refused", str(exc)
    except Failed as exc:
        if job.outcome.result != "reverted":
            job.outcome.result = "failed"
        failed = str(exc)
    job.outcome.message = failed or ""
    try:
        job.save_record()
    except OSError as exc:
        module.warn(f"could not write the deploy record: {exc}")
    changed = any(s.changed for s in job.outcome.steps)
    result = {"changed": changed, "deploy": job.outcome.as_dict()}
    if job.diffs:
        result["diff"] = job.diffs
    if failed:
        module.fail_json(msg=failed, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
