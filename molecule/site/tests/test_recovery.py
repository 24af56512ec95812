"""Disaster recovery (playbooks/disaster-recovery.yml): the client, a fresh
host that never saw the platform, becomes the server from S3 alone, serving
the data the server had at its newest point. Runs last (conftest.py): the
client is a server of its own afterwards.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


testinfra_hosts = ["ansible://clients"]

# The guide's objectives (§4.3): a complete system failure, and the database's.
RTO_COMPLETE_SYSTEM_S = 4 * 3600
RTO_DATABASE_S = 30 * 60


def sql(host, statement: str) -> str:
    pg = host.check_output(
        "docker ps -q --filter label=com.docker.compose.project=ytempire"
        " --filter label=com.docker.compose.service=postgres"
    )
    return host.check_output(
        f"docker exec -u postgres {pg} psql -X -At -v ON_ERROR_STOP=1 -U ytempire -d ytempire "
        f"-c {shlex.quote(statement)}"
    )


def test_a_fresh_host_serves_the_servers_data_from_s3_alone(
    host, target, s3, tmp_path, run_playbook, figure
):
    # The server's data at its newest point: a row the new host must serve.
    marker = f"disaster recovery {time.time():.0f}"
    sql(target, "DROP TABLE IF EXISTS dr_marker; CREATE TABLE dr_marker (note text)")
    sql(target, f"INSERT INTO dr_marker VALUES ('{marker}')")  # noqa: S608  our own text
    rows = sql(target, "SELECT count(*) FROM backup_rows")
    # A video in a full point, then the marker in a newer hourly (database) point.
    target.check_output(
        "install -o ytempire -g ytempire -m 0640 /dev/null /data/media/dr-video.mp4 && "
        "head -c 200000 /dev/urandom > /data/media/dr-video.mp4"
    )
    video = target.check_output("sha256sum /data/media/dr-video.mp4").split()[0]
    rc, out = run_playbook("playbooks/backup.yml", {"backup_scope": "full"})
    assert rc == 0, out
    sql(target, f"INSERT INTO dr_marker VALUES ('{marker} (hourly)')")  # noqa: S608  our own text
    rc, out = run_playbook("playbooks/backup.yml", {"backup_scope": "database"})
    assert rc == 0, out
    assert not host.file("/backup/points").exists, "the client must start with no local point"

    # The client as the only host of group ytempire, with the scenario's variables.
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    (inventory / "group_vars").symlink_to(ROOT / "molecule/site/inventory/group_vars")
    hosts = {
        "ytempire": {"hosts": {"site-client": {"ansible_connection": "community.docker.docker"}}}
    }
    (inventory / "hosts.yml").write_text(json.dumps({"all": {"children": hosts}}))
    started = time.monotonic()
    rc, out = run_playbook(
        "playbooks/disaster-recovery.yml",
        {"docker_users": []},
        inventory=str(inventory),
        timeout=3600,
    )
    rto = time.monotonic() - started
    Path(tmp_path / "dr.log").write_text(out)
    assert rc == 0, out[-6000:]

    assert sql(host, "SELECT string_agg(note, ',' ORDER BY note) FROM dr_marker") == (
        f"{marker},{marker} (hourly)"
    )
    # The media from the full point, the rest from the newest.
    assert host.check_output("sha256sum /data/media/dr-video.mp4").split()[0] == video
    assert host.file("/data/media/dr-video.mp4").user == "ytempire"
    assert sql(host, "SELECT count(*) FROM backup_rows") == rows
    answer = host.run("curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1/health")
    assert answer.stdout == "200"
    record = json.loads(
        host.file("/var/lib/ytempire/backup/last-disaster-recovery.json").content_string
    )
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
