"""ytempire_offsite against a real S3-protocol server (moto in server mode), behind a
proxy that injects 500s and stalls: uploads, encryption, checks, retries, retention."""

from __future__ import annotations

import base64
import datetime as dt
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.plugins.loader import load
from tests.support.s3server import FaultProxy, MotoServer, free_port

ROOT = Path(__file__).resolve().parents[2]


# As Ansible ships them: ytempire_offsite imports ansible.module_utils.ytempire_backup.
backup = load(
    "ansible.module_utils.ytempire_backup", ROOT / "plugins/module_utils/ytempire_backup.py"
)
offsite = load(
    "ansible.module_utils.ytempire_offsite", ROOT / "plugins/module_utils/ytempire_offsite.py"
)
Artifact, build_manifest = backup.Artifact, backup.build_manifest
point_id, sha256_file, write_manifest = backup.point_id, backup.sha256_file, backup.write_manifest

KEY_HEX = "8f" * 16 + "3a" * 16
OTHER_KEY_HEX = "11" * 32
PREFIX = "hosts/ytempire-1"
T0 = dt.datetime(2026, 12, 2, 2, 0, tzinfo=dt.UTC)
SECRET = b"CREATE ROLE ytempire WITH PASSWORD 'not-for-the-bucket';\n"
MiB = 1 << 20


@pytest.fixture(scope="session")
def s3() -> Iterator[MotoServer]:
    # YTEMPIRE_MOTO_PYTHON: a Python with moto[server], when this one runs the tests under
    # the servers' old boto3 and cryptography (which moto does not install with).
    with MotoServer(host="127.0.0.1", python=os.environ.get("YTEMPIRE_MOTO_PYTHON")) as server:
        yield server


@pytest.fixture
def proxy(s3: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy(s3.port) as running:
        yield running


@pytest.fixture
def raw(s3: MotoServer):
    """A client straight to moto, to look at and tamper with what the tests stored."""
    return boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",  # noqa: S106  moto takes any credentials
        config=Config(s3={"addressing_style": "path"}),
    )


@pytest.fixture
def bucket(raw) -> str:
    name = f"offsite-{uuid.uuid4().hex[:12]}"
    raw.create_bucket(Bucket=name)
    return name


@pytest.fixture
def make_offsite(proxy: FaultProxy, bucket: str) -> Callable[..., offsite.Offsite]:
    def make(**overrides) -> offsite.Offsite:
        options = {
            "bucket": bucket,
            "prefix": PREFIX,
            "encryption_key": KEY_HEX,
            "endpoint_url": proxy.endpoint_url,
            "region": "us-east-1",
            "access_key_id": "test",
            "secret_access_key": "test",  # moto takes any credentials
            "part_size": 5 * MiB,
            "max_attempts": 4,
            "backoff_base": 0.01,
            "backoff_cap": 0.05,
            "connect_timeout": 2,
            "read_timeout": 5,
        }
        return offsite.Offsite(**{**options, **overrides})

    return make


def make_point(root: Path, created: dt.datetime, big: int = 0) -> Path:
    """A complete database point: postgres.dump.zst of ``big`` bytes (random, a marker
    at its start), a globals file holding SECRET, a small redis file."""
    pid = point_id(created, "database")
    point = root / "points" / pid
    point.mkdir(parents=True)
    contents = {
        "postgres.dump.zst": SECRET + os.urandom(max(0, big - len(SECRET))),
        "postgres-globals.sql.zst": SECRET * 20,
        "redis.rdb.zst": os.urandom(3000),
    }
    parts = {
        "postgres.dump.zst": "postgres",
        "postgres-globals.sql.zst": "postgres-globals",
        "redis.rdb.zst": "redis",
    }
    artifacts = []
    for name, data in contents.items():
        (point / name).write_bytes(data)
        digest, size = sha256_file(str(point / name))
        artifacts.append(Artifact(parts[name], name, digest, size))
    write_manifest(str(point), build_manifest(pid, "ytempire-1", artifacts, {}, {}))
    return point


def keys(raw, bucket: str) -> list[str]:
    return [o["Key"] for o in raw.list_objects_v2(Bucket=bucket).get("Contents", [])]


def uploads(raw, bucket: str) -> list[dict]:
    return raw.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def tamper(raw, bucket: str, key: str, change: Callable[[bytes], bytes]) -> None:
    """Rewrite an object's bytes, keeping its metadata (what a rotting disk would do)."""
    head = raw.head_object(Bucket=bucket, Key=key)
    data = raw.get_object(Bucket=bucket, Key=key)["Body"].read()
    raw.put_object(Bucket=bucket, Key=key, Body=change(data), Metadata=head["Metadata"])


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# --- round trip -------------------------------------------------------------------


def test_round_trip_of_a_multipart_point(make_offsite, raw, bucket, proxy, tmp_path):
    point = make_point(tmp_path / "local", T0, big=12 * MiB)
    store = make_offsite()

    result = store.upload_point(str(point))

    assert result["changed"] is True
    assert result["uploaded"][-1] == "manifest.json"
    dump_key = store.object_key(point.name, "postgres.dump.zst")
    assert dump_key == f"{PREFIX}/points/{point.name}/postgres.dump.zst.enc"
    head = raw.head_object(Bucket=bucket, Key=dump_key)
    assert head["ETag"].strip('"').endswith("-3"), "12 MiB in 5 MiB parts is 3 parts"
    assert head["ContentLength"] == offsite.ciphertext_size(12 * MiB)
    assert sorted(keys(raw, bucket)) == sorted(
        store.object_key(point.name, name) for name in os.listdir(point)
    )
    assert uploads(raw, bucket) == []

    listed = store.list_points()
    assert [(p["id"], p["scope"], p["complete"]) for p in listed] == [
        (point.name, "database", True)
    ]
    assert listed[0]["created"] == T0
    assert listed[0]["verified"]

    assert store.verify_point(point.name) == []

    restored = Path(store.download_point(point.name, str(tmp_path / "restore")))
    assert restored == tmp_path / "restore" / point.name
    assert files_of(restored) == files_of(point)
    assert os.listdir(tmp_path / "restore") == [point.name], "no staging directory left"

    again = store.upload_point(str(point))
    assert again["changed"] is False, "a point already offsite and checked is left alone"


def test_key_text_is_hex_or_base64_of_32_bytes():
    key = bytes.fromhex(KEY_HEX)
    assert offsite.parse_key(KEY_HEX) == key
    assert offsite.parse_key(KEY_HEX.upper()) == key
    assert offsite.parse_key(base64.b64encode(key).decode()) == key
    assert offsite.parse_key(base64.urlsafe_b64encode(key).decode() + "\n") == key
    for bad in ("", "8f" * 16, "not a key at all", base64.b64encode(b"x" * 31).decode()):
        with pytest.raises(offsite.OffsiteError, match="openssl rand -hex 32") as failure:
            offsite.parse_key(bad)
        assert not bad or bad not in str(failure.value), "the message never quotes the key"


def test_bad_settings_fail_before_any_request():
    with pytest.raises(offsite.OffsiteError, match="part_size"):
        offsite.Offsite("b", "p", KEY_HEX, part_size=MiB)
    with pytest.raises(offsite.OffsiteError, match="max_attempts"):
        offsite.Offsite("b", "p", KEY_HEX, max_attempts=0)
    with pytest.raises(offsite.OffsiteError, match="both access_key_id"):
        offsite.Offsite("b", "p", KEY_HEX, access_key_id="AKIA")


# --- encryption -------------------------------------------------------------------


def test_the_bucket_holds_ciphertext_and_a_wrong_key_is_named(make_offsite, raw, bucket, tmp_path):
    point = make_point(tmp_path / "local", T0, big=6 * MiB)
    store = make_offsite()
    store.upload_point(str(point))

    for key in keys(raw, bucket):
        data = raw.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert data.startswith(offsite.MAGIC)
        assert SECRET[:24] not in data, f"{key} holds plaintext"

    stranger = make_offsite(encryption_key=OTHER_KEY_HEX)
    problems = stranger.verify_point(point.name)
    assert len(problems) == 1
    assert "wrong encryption key" in problems[0]
    with pytest.raises(offsite.DecryptError, match="wrong encryption key"):
        stranger.download_point(point.name, str(tmp_path / "restore"))
    assert not (tmp_path / "restore").exists() or os.listdir(tmp_path / "restore") == []


def _encrypt(data: bytes, name: str = "p/f", chunk: int = 16) -> bytes:
    encryptor = offsite.Encryptor(bytes.fromhex(KEY_HEX), name, chunk_size=chunk)
    return encryptor.encrypt_bytes(data)


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 48, 100])
def test_stream_format_round_trips_any_size(size):
    data = os.urandom(size)
    sealed = _encrypt(data)
    assert len(sealed) == offsite.ciphertext_size(size, chunk_size=16)
    decryptor = offsite.Decryptor(bytes.fromhex(KEY_HEX), "p/f")
    out = b"".join(decryptor.update(sealed[i : i + 7]) for i in range(0, len(sealed), 7))
    assert out + decryptor.finish() == data


def test_stream_format_detects_truncation_reordering_flips_and_moves():
    key = bytes.fromhex(KEY_HEX)
    data = os.urandom(64)  # four 16-byte chunks
    sealed = _encrypt(data)
    head, size = offsite.HEADER_SIZE, 16 + offsite.TAG_SIZE
    chunks = [sealed[head + i * size : head + (i + 1) * size] for i in range(4)]
    damaged = {
        "truncated at a chunk boundary": sealed[: head + 3 * size],
        "truncated inside a chunk": sealed[:-5],
        "only the header": sealed[:head],
        "extended": sealed + chunks[0],
        "reordered": sealed[:head] + chunks[1] + chunks[0] + chunks[2] + chunks[3],
        "a flipped bit": sealed[:-1] + bytes([sealed[-1] ^ 1]),
        "a flipped header bit": sealed[:30] + bytes([sealed[30] ^ 1]) + sealed[31:],
    }
    decrypted = []
    for what, blob in damaged.items():
        try:
            offsite.decrypt_bytes(key, "p/f", blob)
        except offsite.DecryptError:
            continue
        decrypted.append(what)
    assert decrypted == [], "damage that went unnoticed"
    with pytest.raises(offsite.DecryptError, match="belongs to another file"):
        offsite.decrypt_bytes(key, "p/other", sealed)
    assert offsite.decrypt_bytes(key, "p/f", sealed) == data


# --- damage in the bucket -------------------------------------------------------------


def test_verify_reports_a_flipped_byte_and_a_truncated_object(make_offsite, raw, bucket, tmp_path):
    point = make_point(tmp_path / "local", T0, big=6 * MiB)
    store = make_offsite()
    store.upload_point(str(point))
    dump = store.object_key(point.name, "postgres.dump.zst")
    redis = store.object_key(point.name, "redis.rdb.zst")

    middle = 3 * MiB
    tamper(raw, bucket, dump, lambda b: b[:middle] + bytes([b[middle] ^ 0x40]) + b[middle + 1 :])
    tamper(raw, bucket, redis, lambda b: b[:-100])

    problems = store.verify_point(point.name)
    assert len(problems) == 2, problems
    assert "postgres.dump.zst" in problems[0]
    assert "does not authenticate" in problems[0]
    assert "redis.rdb.zst" in problems[1]

    with pytest.raises(offsite.DecryptError, match="postgres.dump.zst"):
        store.download_point(point.name, str(tmp_path / "restore"))
    assert os.listdir(tmp_path / "restore") == [], "a failed download leaves nothing"


def test_verify_reports_missing_and_foreign_objects(make_offsite, raw, bucket, tmp_path):
    point = make_point(tmp_path / "local", T0)
    store = make_offsite()
    store.upload_point(str(point))
    raw.delete_object(Bucket=bucket, Key=store.object_key(point.name, "redis.rdb.zst"))
    raw.put_object(Bucket=bucket, Key=store.object_key(point.name, "stray"), Body=b"x")

    problems = store.verify_point(point.name)

    assert any("stray.enc is not in the manifest" in p for p in problems), problems
    assert any("redis.rdb.zst.enc does not exist" in p for p in problems), problems


# --- retries ----------------------------------------------------------------------


def test_500s_on_some_parts_are_retried(make_offsite, proxy, tmp_path):
    point = make_point(tmp_path / "local", T0, big=12 * MiB)
    store = make_offsite()
    proxy.fail_next(2, method="PUT", query="partNumber")
    proxy.fail_next(1, method="PUT", query="partNumber", after=3)

    store.upload_point(str(point))

    assert proxy.injected() == 3
    part_puts = [r for r in proxy.requests if r[0] == "PUT" and "partNumber=" in r[1]]
    assert len(part_puts) == 3 + 3, "three parts, three of the tries answered 500"
    assert store.verify_point(point.name) == []


def test_500s_on_every_attempt_abort_and_leave_no_object(
    make_offsite, raw, bucket, proxy, tmp_path
):
    point = make_point(tmp_path / "local", T0, big=12 * MiB)
    store = make_offsite(max_attempts=3)
    proxy.fail_next(1000, query="partNumber")

    with pytest.raises(offsite.OffsiteError, match=r"part 1/3 .* failed after 3 attempts"):
        store.upload_point(str(point))

    dump = store.object_key(point.name, "postgres.dump.zst")
    assert dump not in keys(raw, bucket)
    assert raw.list_objects_v2(Bucket=bucket, Prefix=dump).get("KeyCount") == 0
    assert uploads(raw, bucket) == [], "the multipart upload was aborted"
    assert any(r[0] == "DELETE" and "uploadId=" in r[1] for r in proxy.requests)
    assert proxy.injected() == 3, "bounded: max_attempts tries, botocore adds none"


def test_connection_errors_are_retried_with_bounded_backoff(bucket):
    slept = []
    store = offsite.Offsite(
        bucket,
        PREFIX,
        KEY_HEX,
        endpoint_url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        region="us-east-1",
        access_key_id="test",
        secret_access_key="test",  # noqa: S106  moto takes any credentials
        max_attempts=4,
        backoff_base=0.01,
        backoff_cap=0.02,
        sleep=slept.append,
    )

    with pytest.raises(offsite.OffsiteError, match="after 4 attempts.*EndpointConnectionError"):
        store.list_points()
    assert len(slept) == 3
    assert all(0 <= s <= 0.02 for s in slept)


def test_a_stall_past_the_read_timeout_is_retried(make_offsite, proxy, tmp_path):
    point = make_point(tmp_path / "local", T0, big=6 * MiB)
    store = make_offsite(read_timeout=1)
    proxy.stall_next(1, seconds=3, method="PUT", query="partNumber")
    proxy.stall_next(1, seconds=3, method="GET", path="postgres.dump.zst")  # a ranged read

    store.upload_point(str(point))
    assert store.verify_point(point.name) == []

    assert [r[0] for r in proxy.requests if r[2] == "stalled"] == ["PUT", "GET"]


def test_a_failed_upload_leaves_no_manifest_and_a_rerun_completes_it(
    make_offsite, raw, bucket, proxy, tmp_path
):
    point = make_point(tmp_path / "local", T0, big=6 * MiB)
    store = make_offsite(max_attempts=2)
    proxy.fail_next(1000, method="PUT", path="redis.rdb.zst")  # the last artifact

    with pytest.raises(offsite.OffsiteError, match="redis.rdb.zst.enc failed after 2 attempts"):
        store.upload_point(str(point))

    manifest = store.object_key(point.name, "manifest.json")
    assert manifest not in keys(raw, bucket)
    assert store.object_key(point.name, "postgres.dump.zst") in keys(raw, bucket)
    [listed] = store.list_points()
    assert listed["complete"] is False
    assert "not complete" in store.verify_point(point.name)[0]
    with pytest.raises(offsite.OffsiteError, match="no manifest object"):
        store.download_point(point.name, str(tmp_path / "restore"))
    assert not (tmp_path / "restore").exists()

    proxy.clear()
    result = store.upload_point(str(point))
    assert sorted(result["skipped"]) == ["postgres-globals.sql.zst", "postgres.dump.zst"]
    assert result["uploaded"] == ["redis.rdb.zst", "manifest.json"]
    assert store.list_points()[0]["complete"] is True
    assert store.verify_point(point.name) == []


def test_stale_multipart_uploads_are_aborted_first(make_offsite, raw, bucket, tmp_path):
    point = make_point(tmp_path / "local", T0)
    store = make_offsite()
    stale_key = store.object_key(point.name, "media.tar.zst")
    raw.create_multipart_upload(Bucket=bucket, Key=stale_key)

    result = store.upload_point(str(point))

    assert result["aborted_uploads"] == [stale_key]
    assert uploads(raw, bucket) == []


def test_a_damaged_local_point_is_not_uploaded(make_offsite, raw, bucket, tmp_path):
    point = make_point(tmp_path / "local", T0, big=6 * MiB)
    with open(point / "postgres.dump.zst", "r+b") as handle:
        handle.seek(MiB)
        handle.write(b"rot")
    store = make_offsite()

    with pytest.raises(offsite.OffsiteError, match="the local point is damaged"):
        store.upload_point(str(point))
    assert uploads(raw, bucket) == []

    (point / "manifest.json").unlink()
    with pytest.raises(offsite.ManifestError, match="not complete"):
        store.upload_point(str(point))


# --- listing, deleting, retention -------------------------------------------------------


def test_list_points_ignores_keys_that_are_not_ours(make_offsite, raw, bucket, tmp_path):
    point = make_point(tmp_path / "local", T0)
    store = make_offsite()
    store.upload_point(str(point))
    for key in (
        f"{PREFIX}/points/not-a-point/x.enc",
        f"{PREFIX}/points/{point.name}/nested/x.enc",
        f"{PREFIX}/points/20261203T020000Z-weekly/x.enc",  # no such scope
        f"{PREFIX}/points/20261203T020000Z-daily/notes.txt",
        f"{PREFIX}/elsewhere.enc",
        "another-host/points/20261203T020000Z-daily/manifest.json.enc",
    ):
        raw.put_object(Bucket=bucket, Key=key, Body=b"x")

    assert [p["id"] for p in store.list_points()] == [point.name]


def test_delete_removes_the_manifest_first(make_offsite, raw, bucket, proxy, tmp_path):
    first = make_point(tmp_path / "local", T0)
    second = make_point(tmp_path / "local", T0 + dt.timedelta(days=1))
    store = make_offsite(max_attempts=1)
    store.upload_point(str(first))
    store.upload_point(str(second))
    proxy.requests.clear()

    store.delete_point(first.name)

    deletes = [r[1] for r in proxy.requests if r[0] == "DELETE"]
    assert len(deletes) == 4
    assert "manifest.json.enc" in deletes[0]
    assert [p["id"] for p in store.list_points()] == [second.name]

    # A delete that dies after the manifest leaves an incomplete point, never a complete one.
    proxy.fail_next(1000, method="DELETE", after=1)
    with pytest.raises(offsite.OffsiteError):
        store.delete_point(second.name)
    [left] = store.list_points()
    assert left["complete"] is False


def test_retention_keeps_the_last_verified_point_and_deletes_old_ones(
    make_offsite, proxy, tmp_path
):
    store = make_offsite(max_attempts=1)
    days = [make_point(tmp_path / "local", T0 + dt.timedelta(days=n)) for n in (0, 5, 10)]
    for point in days[:2]:
        store.upload_point(str(point))
    proxy.fail_next(1000, method="PUT", path="redis.rdb.zst")
    with pytest.raises(offsite.OffsiteError):
        store.upload_point(str(days[2]))  # the newest never completes
    proxy.clear()
    now = T0 + dt.timedelta(days=30)

    plan = store.apply_retention(now, keep_days=3, minimum_redundancy=1)

    assert plan.delete == [days[0].name]
    assert set(plan.keep) == {days[1].name, days[2].name}
    assert [p["id"] for p in store.list_points()] == [days[1].name, days[2].name]

    # Again, much later: the one verified point stays, however old.
    plan = store.apply_retention(now + dt.timedelta(days=365), keep_days=3)
    assert plan.delete == []
    assert [p["id"] for p in store.list_points()] == [days[1].name, days[2].name]

    # A newer verified point lets the old one and the incomplete one go.
    newest = make_point(tmp_path / "local", T0 + dt.timedelta(days=40))
    store.upload_point(str(newest))
    plan = store.apply_retention(now + dt.timedelta(days=365), keep_days=3)
    assert sorted(plan.delete) == [days[1].name, days[2].name]
    assert [p["id"] for p in store.list_points()] == [newest.name]
