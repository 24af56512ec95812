"""Disaster recovery (playbooks/disaster-recovery.yml): the client, a fresh
host that never saw the platform, becomes the server from S3 alone, serving
the data the server had at its newest point.

The recovery converges site.yml on the client, minutes of work that need
nothing from the target once its points are in S3. So the first test makes
the points (under a prefix of their own, so that the backup tests' points
running beside it are not the newest) and starts the playbook in the
background; the modules that use only the target run meanwhile, and the
last test waits for the playbook and checks the client (conftest.py orders
them). The client is a server of its own afterwards.
"""

from __future__ import annotations

import json
import shlex
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen, TimeoutExpired

import pytest

ROOT = Path(__file__).resolve().parents[3]


testinfra_hosts = ["ansible://clients"]

# The guide's objectives (§4.3): a complete system failure, and the database's.
RTO_COMPLETE_SYSTEM_S = 4 * 3600
RTO_DATABASE_S = 30 * 60
# The prefix of the points the recovery starts from (the scenario's is "site").
PREFIX = "disaster-recovery"


def sql(host, statement: str) -> str:
    pg = host.check_output(
        "docker ps -q --filter label=com.docker.compose.project=ytempire"
        " --filter label=com.docker.compose.service=postgres"
    )
    return host.check_output(
        f"docker exec -u postgres {pg} psql -X -At -v ON_ERROR_STOP=1 -U ytempire -d ytempire "
        f"-c {shlex.quote(statement)}"
    )


def points(host) -> set[str]:
    return set(host.check_output("ls -1 /backup/points").split())


@dataclass
class Recovery:
    """The recovery playbook running in the background, and what it must bring back."""

    process: Popen
    log: Path
    marker: str
    video: str
    points: set[str]
    started: float
    ended: list[float] = field(default_factory=list)

    def watch(self) -> None:
        """Note when the playbook ends (the RTO), whenever the last test looks."""

        def _wait() -> None:
            self.process.wait()
            self.ended.append(time.monotonic())

        threading.Thread(target=_wait, daemon=True).start()


@pytest.fixture(scope="session")
def recovery(client, target, s3, tmp_path_factory, run_playbook, start_playbook):
    # The server's data at its newest point: a row the new host must serve.
    marker = f"disaster recovery {time.time():.0f}"
    sql(target, "DROP TABLE IF EXISTS dr_marker; CREATE TABLE dr_marker (note text)")
    sql(target, f"INSERT INTO dr_marker VALUES ('{marker}')")  # noqa: S608  our own text
    # A video in a full point, then the marker in a newer hourly (database) point.
    target.check_output(
        "install -o ytempire -g ytempire -m 0640 /dev/null /data/media/dr-video.mp4 && "
        "head -c 200000 /dev/urandom > /data/media/dr-video.mp4"
    )
    video = target.check_output("sha256sum /data/media/dr-video.mp4").split()[0]
    offsite = json.loads(target.file("/etc/ytempire/backup.json").content_string)["offsite"]
    settings = {"offsite": {**offsite, "prefix": PREFIX}}
    before = points(target)
    rc, out = run_playbook(
        "playbooks/backup.yml", {"backup_scope": "full", "backup_run_settings": settings}
    )
    assert rc == 0, out
    sql(target, f"INSERT INTO dr_marker VALUES ('{marker} (hourly)')")  # noqa: S608  our own text
    rc, out = run_playbook(
        "playbooks/backup.yml", {"backup_scope": "database", "backup_run_settings": settings}
    )
    assert rc == 0, out
    assert not client.file("/backup/points").exists, "the client must start with no local point"

    # The client as the only host of group ytempire, with the scenario's variables.
    work = tmp_path_factory.mktemp("recovery")
    inventory = work / "inventory"
    inventory.mkdir()
    (inventory / "group_vars").symlink_to(ROOT / "molecule/site/inventory/group_vars")
    hosts = {
        "ytempire": {"hosts": {"site-client": {"ansible_connection": "community.docker.docker"}}}
    }
    (inventory / "hosts.yml").write_text(json.dumps({"all": {"children": hosts}}))
    found = Recovery(
        process=start_playbook(
            "playbooks/disaster-recovery.yml",
            {"docker_users": [], "backup_offsite_prefix": PREFIX},
            str(inventory),
            work / "dr.log",
        ),
        log=work / "dr.log",
        marker=marker,
        video=video,
        points=points(target) - before,
        started=time.monotonic(),
    )
    found.watch()
    yield found
    if found.process.poll() is None:
        found.process.terminate()
        found.process.wait(timeout=60)


def test_the_recovery_begins_from_the_servers_newest_points_in_s3(recovery, s3):
    assert len(recovery.points) == 2, recovery.points
    full, database = sorted(recovery.points, key=lambda p: p.endswith("-database"))
    assert full.endswith("-full")
    assert database.endswith("-database")
    for point in (full, database):
        assert f"{PREFIX}/points/{point}/manifest.json.enc" in s3.listing(f"{PREFIX}/")
    assert recovery.process.poll() in (None, 0), recovery.log.read_text()[-6000:]


def test_a_fresh_host_serves_the_servers_data_from_s3_alone(host, recovery, figure):
    try:
        rc = recovery.process.wait(timeout=3600)
    except TimeoutExpired:
        pytest.fail(f"the recovery ran past an hour:\n{recovery.log.read_text()[-6000:]}")
    out = recovery.log.read_text()
    assert rc == 0, out[-6000:]
    rto = (recovery.ended[0] if recovery.ended else time.monotonic()) - recovery.started
    assert not host.file("/backup/recovery-in-progress").exists, "the hold outlived the restore"
    marker, video = recovery.marker, recovery.video

    assert sql(host, "SELECT string_agg(note, ',' ORDER BY note) FROM dr_marker") == (
        f"{marker},{marker} (hourly)"
    )
    # The media from the full point, the rest from the newest.
    assert host.check_output("sha256sum /data/media/dr-video.mp4").split()[0] == video
    assert host.file("/data/media/dr-video.mp4").user == "ytempire"
    answer = host.run("curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1/health")
    assert answer.stdout == "200"
    record = json.loads(
        host.file("/var/lib/ytempire/backup/last-disaster-recovery.json").content_string
    )
    # The newest point under the prefix is the hourly one; the media come from the full one.
    assert {record["point"], record["media_from"]} == recovery.points
    assert record["point"].endswith("-database")
    assert record["media_from"].endswith("-full")
    assert "database" in record["restore"]
    assert "redis" in record["restore"]
    assert rto < RTO_COMPLETE_SYSTEM_S
    figure("disaster recovery RTO (s)", round(rto))
    restore_s = record["restore"]["database"]["seconds"]
    print(
        f"disaster recovery: {rto:.0f} s in all (objective {RTO_COMPLETE_SYSTEM_S} s), "
        f"the database restore {restore_s:.1f} s (objective {RTO_DATABASE_S} s)"
    )
