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
        "docker ps -q --filter label=com.docker.compose.project=ytempire --filter label=com.docker.compose.service=postgres"
    )
    return host.check_output(
        f"docker exec -u postgres {pg} psql -X -At -v ON_ERROR_STOP=1 -U ytempire -d ytempire -c {shlex.quote(statement)}"
    )


def test_a_fresh_host_serves_the_servers_data_from_s3_alone(
    host, target, s3, tmp_path, run_playbook, figure
):
    # The server's data at its newest point: a row the new host must serve.
    marker = f"disaster recovery {time.time():.0f}"
    sql(target, "CREATE TABLE IF NOT EXISTS dr_marker (note text)")
    sql(target, f"INSERT INTO dr_marker VALUES ('{marker}')")
    rows = sql(target, "SELECT count(*) FROM backup_rows")
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

    assert sql(host, "SELECT note FROM dr_marker") == marker
    assert sql(host, "SELECT count(*) FROM backup_rows") == rows
    answer = host.run("curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1/health")
    assert answer.stdout == "200"
    record = json.loads(
        host.file("/var/lib/ytempire/backup/last-disaster-recovery.json").content_string
    )
    assert record["point"].endswith("-database")
    assert "database" in record["restore"] and "redis" in record["restore"]
    assert rto < RTO_COMPLETE_SYSTEM_S
    figure("disaster recovery RTO (s)", round(rto))
    restore_s = record["restore"]["database"]["seconds"]
    print(
        f"disaster recovery: {rto:.0f} s in all (objective {RTO_COMPLETE_SYSTEM_S} s), "
        f"the database restore {restore_s:.1f} s (objective {RTO_DATABASE_S} s)"
    )
