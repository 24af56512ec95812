"""Offsite copies of the YTEMPIRE restore points: encrypted on the server,
stored in an S3 bucket, checked after every upload and on demand.

A local restore point is ``<backup_dir>/points/<id>`` (see ytempire_backup).
Offsite, each of its files is one object ``<prefix>/points/<id>/<file>.enc``,
and, as locally, the point is complete only when its manifest object
(``manifest.json.enc``) exists: it is uploaded last, after every artifact was
uploaded and checked, and deleted first. A run that dies leaves a point
without a manifest object, which never counts as a restore point.

Encryption happens here, before anything leaves the server, so the bucket's
owner (or anyone who reads the bucket) learns sizes and nothing else. The
format (``FORMAT_VERSION`` 1) is a header followed by AES-256-GCM chunks::

    header  magic b"YTOFFSIT" (8) | version (1) | chunk size (4, big endian)
            | key id (8) | salt (16) | nonce prefix (7)                  = 44 bytes
    chunk   AES-256-GCM(file key, nonce, plaintext[chunk size], aad) || tag (16)

- the file key is HKDF-SHA256(master key, salt, "ytempire-offsite v1 file
  key"), a fresh one per object, so nonces never repeat across objects;
- the nonce of chunk i is nonce prefix | i (4, big endian) | last (1: 0x01 on
  the final chunk, 0x00 before), the STREAM construction (Hoang, Reyhanitabar,
  Rogaway, Vizar 2015): a reordered chunk fails (i), a truncated object fails
  (no chunk carries the last flag where the object ends), an extended one
  fails (a chunk follows the last), and a flipped bit fails (the tag);
- the associated data of each chunk is the header and the object's name
  (``<id>/<file>``), so neither the header nor an object moved to another
  point or file goes unnoticed;
- the key id is the first 8 bytes of HMAC-SHA256(master key, "ytempire-offsite
  key id"): a wrong key is named as such before anything is decrypted.

An empty file is one final chunk of no plaintext. Memory: an object is
encrypted as a stream and uploaded a part at a time, so one part
(``part_size``, 64 MiB by default; briefly two copies of it) is in memory,
never a whole file, and nothing is written to disk: no temporary file doubles
a multi-GB artifact on a full backup disk. Downloads read ranges of
``part_size`` the same way. A large file is read twice: once to check it
against the manifest and to compute the ciphertext's sha256 and each part's
md5 (the multipart upload's metadata and ETag must be known before its first
part), then to upload it. The encryption is deterministic for a given salt
and nonce prefix, so the second pass yields the same bytes; a file that
changed in between is caught by its parts' md5s.

Retries are ours: botocore makes one attempt per call, and each request
(each part, each ranged download) is tried up to ``max_attempts`` times with
exponential backoff and full jitter on 5xx answers, throttling, connection
errors and timeouts. A multipart upload that fails for good is aborted, so no
partial object ever exists under a final key.

It runs on the target servers' system Python (3.10, boto3 1.20, cryptography
3.4 on Ubuntu 22.04) and is imported by the Ansible modules; boto3 and
cryptography are imported on first use, so this file imports without them.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

try:
    from ansible.module_utils.ytempire_backup import (
        MANIFEST,
        POINTS_DIR,
        ManifestError,
        PointInfo,
        RetentionPlan,
        fsync_dir,
        parse_manifest,
        parse_point_id,
        plan_retention,
        read_manifest,
        sha256_file,
        write_file_atomic,
    )
except ImportError:  # installed on the server next to it, run by the backup timers
    from ytempire_backup import (  # type: ignore[no-redef]
        MANIFEST,
        POINTS_DIR,
        ManifestError,
        PointInfo,
        RetentionPlan,
        fsync_dir,
        parse_manifest,
        parse_point_id,
        plan_retention,
        read_manifest,
        sha256_file,
        write_file_atomic,
    )

MiB = 1 << 20
MIN_PART_SIZE = 5 * MiB  # S3's smallest part (all but the last)
MAX_PART_SIZE = 1024 * MiB  # one part is held in memory; S3 allows 5 GiB
MAX_PARTS = 10000  # S3's limit
DEFAULT_PART_SIZE = 64 * MiB

SUFFIX = ".enc"
MAGIC = b"YTOFFSIT"
FORMAT_VERSION = 1
CHUNK_SIZE = MiB
TAG_SIZE = 16
SALT_SIZE = 16
NONCE_PREFIX_SIZE = 7
KEY_ID_SIZE = 8
HEADER_SIZE = len(MAGIC) + 1 + 4 + KEY_ID_SIZE + SALT_SIZE + NONCE_PREFIX_SIZE
_HKDF_INFO = b"ytempire-offsite v1 file key"
_KEY_ID_INFO = b"ytempire-offsite key id"

# Object metadata (x-amz-meta-...). Set when the object is created; a
# multipart upload's metadata is fixed before its first part, which is why a
# large file's ciphertext is hashed in a first pass.
META_FORMAT = "ytempire-format"
META_KEY_ID = "ytempire-key-id"
META_SHA256 = "ytempire-sha256"  # of the object's bytes (the ciphertext)
META_PLAIN_SHA256 = "ytempire-plaintext-sha256"
META_PLAIN_SIZE = "ytempire-plaintext-size"
# On the manifest object only: every artifact passed its integrity check after
# its upload (the UTC time of that check). Retention counts such points.
META_VERIFIED = "ytempire-verified"

# Answers worth another attempt besides 5xx: the service asks us to slow down.
_RETRY_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "RequestThrottled",
        "SlowDown",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
    }
)
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})


class OffsiteError(RuntimeError):
    """An offsite operation that failed; ``code`` is S3's error code or HTTP status, if any."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class DecryptError(OffsiteError):
    """An object that does not decrypt: the wrong key, or bytes that are not what was written."""


# --- the key --------------------------------------------------------------------


def parse_key(text: str | bytes) -> bytes:
    """The 32-byte master key from the vault's text: 64 hex digits or base64.

    The message never quotes the key: it may be most of a valid one.
    """
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    value = "".join(str(text).split())
    if len(value) == 64:
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    try:
        key = base64.b64decode(value.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise OffsiteError(
            f"the offsite encryption key ({len(value)} characters) is neither 64 hex digits "
            "nor base64 of 32 bytes: generate one with `openssl rand -hex 32` and store it "
            "in the vault"
        )
    return key


def key_id(key: bytes) -> str:
    """A fingerprint of the master key (16 hex digits) that says nothing about it."""
    return hmac.new(key, _KEY_ID_INFO, hashlib.sha256).digest()[:KEY_ID_SIZE].hex()


# --- encryption -----------------------------------------------------------------


def _aesgcm():
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:
        raise OffsiteError(
            "offsite copies need the cryptography library (python3-cryptography): "
            f"install it on this host ({exc})"
        ) from exc
    return AESGCM


def _file_key(key: bytes, salt: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    options = {"algorithm": hashes.SHA256(), "length": 32, "salt": salt, "info": _HKDF_INFO}
    try:
        kdf = HKDF(**options)
    except TypeError:  # a cryptography that still wants its backend named
        from cryptography.hazmat.backends import default_backend

        kdf = HKDF(backend=default_backend(), **options)
    return kdf.derive(key)


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    if counter >= 1 << 32:
        raise OffsiteError("a file of more than 4 PiB cannot be encrypted in 1 MiB chunks")
    return prefix + counter.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def ciphertext_size(size: int, chunk_size: int = CHUNK_SIZE) -> int:
    """The size of the object that a file of ``size`` bytes becomes."""
    chunks = max(1, -(-size // chunk_size))
    return HEADER_SIZE + size + chunks * TAG_SIZE


class Encryptor:
    """Encrypts one file, as a stream of ciphertext pieces (the header, then chunks).

    ``salt`` and ``nonce_prefix`` are drawn once per object; encrypting the same
    plaintext with them again yields the same bytes (the two passes of a large upload).
    """

    def __init__(self, key: bytes, name: str, chunk_size: int = CHUNK_SIZE) -> None:
        self.key = key
        self.name = name
        self.chunk_size = chunk_size
        self.salt = os.urandom(SALT_SIZE)
        self.nonce_prefix = os.urandom(NONCE_PREFIX_SIZE)
        self.header = (
            MAGIC
            + bytes([FORMAT_VERSION])
            + chunk_size.to_bytes(4, "big")
            + bytes.fromhex(key_id(key))
            + self.salt
            + self.nonce_prefix
        )
        self._aead = _aesgcm()(_file_key(key, self.salt))

    def pieces(
        self, path: str, plain_hash=None, counted: list[int] | None = None
    ) -> Iterator[bytes]:
        """The header, then each encrypted chunk of the file at ``path``; the plaintext
        goes into ``plain_hash`` and its size into ``counted[0]`` on the way (one read)."""
        aad = self.header + self.name.encode()
        yield self.header
        with open(path, "rb") as handle:
            counter = 0
            chunk = handle.read(self.chunk_size)
            while True:
                if plain_hash is not None:
                    plain_hash.update(chunk)
                if counted is not None:
                    counted[0] += len(chunk)
                following = handle.read(self.chunk_size) if len(chunk) == self.chunk_size else b""
                last = not following
                yield self._aead.encrypt(_nonce(self.nonce_prefix, counter, last), chunk, aad)
                if last:
                    return
                chunk, counter = following, counter + 1

    def encrypt_bytes(self, data: bytes) -> bytes:
        """The whole object for a small plaintext held in memory (the manifest)."""
        aad = self.header + self.name.encode()
        out = [self.header]
        starts = range(0, len(data), self.chunk_size)
        chunks = [data[i : i + self.chunk_size] for i in starts] or [b""]
        for counter, chunk in enumerate(chunks):
            last = counter == len(chunks) - 1
            out.append(self._aead.encrypt(_nonce(self.nonce_prefix, counter, last), chunk, aad))
        return b"".join(out)


class Decryptor:
    """Decrypts one object fed to it in pieces of any size; ``finish`` at the end.

    A full chunk is held back until more bytes arrive, as only the end of the
    object says which chunk is the last. Every chunk is authenticated before its
    plaintext is returned; ``finish`` fails on a truncated object.
    """

    def __init__(self, key: bytes, name: str) -> None:
        self.key = key
        self.name = name
        self._buffer = bytearray()
        self._aead = None
        self._aad = b""
        self._prefix = b""
        self._chunk_ct = 0
        self._counter = 0

    def _fail(self, what: str) -> DecryptError:
        return DecryptError(f"{self.name}: {what}")

    def _read_header(self) -> None:
        header = bytes(self._buffer[:HEADER_SIZE])
        del self._buffer[:HEADER_SIZE]
        if header[: len(MAGIC)] != MAGIC:
            raise self._fail("not an object of ytempire_offsite (bad magic)")
        offset = len(MAGIC)
        version = header[offset]
        if version != FORMAT_VERSION:
            raise self._fail(f"format version {version}, this code reads {FORMAT_VERSION}")
        chunk_size = int.from_bytes(header[offset + 1 : offset + 5], "big")
        if not 0 < chunk_size <= 64 * MiB:
            raise self._fail(f"implausible chunk size {chunk_size} in the header")
        offset += 5
        their_id = header[offset : offset + KEY_ID_SIZE].hex()
        offset += KEY_ID_SIZE
        if their_id != key_id(self.key):
            raise self._fail(
                f"encrypted with the key {their_id}, this host has the key {key_id(self.key)}: "
                "the wrong encryption key (check the vault's offsite key)"
            )
        salt = header[offset : offset + SALT_SIZE]
        self._prefix = header[offset + SALT_SIZE :]
        self._chunk_ct = chunk_size + TAG_SIZE
        self._aad = header + self.name.encode()
        self._aead = _aesgcm()(_file_key(self.key, salt))

    def _open(self, chunk: bytes, last: bool) -> bytes:
        from cryptography.exceptions import InvalidTag

        try:
            plain = self._aead.decrypt(_nonce(self._prefix, self._counter, last), chunk, self._aad)
        except InvalidTag:
            where = "the last chunk" if last else f"chunk {self._counter}"
            raise self._fail(
                f"{where} does not authenticate: the object was altered, truncated or "
                "reordered, or belongs to another file"
            ) from None
        self._counter += 1
        return plain

    def update(self, data: bytes) -> bytes:
        """The plaintext of the chunks that ``data`` completes (all but the last)."""
        self._buffer += data
        if self._aead is None:
            if len(self._buffer) < HEADER_SIZE:
                return b""
            self._read_header()
        out = []
        while len(self._buffer) > self._chunk_ct:
            chunk = bytes(self._buffer[: self._chunk_ct])
            del self._buffer[: self._chunk_ct]
            out.append(self._open(chunk, last=False))
        return b"".join(out)

    def finish(self) -> bytes:
        """The plaintext of the last chunk; fails if the object ends anywhere else."""
        if self._aead is None:
            raise self._fail(f"{len(self._buffer)} bytes, shorter than the header: truncated")
        if len(self._buffer) < TAG_SIZE:
            raise self._fail("ends without its last chunk: truncated")
        chunk = bytes(self._buffer)
        self._buffer.clear()
        return self._open(chunk, last=True)


def decrypt_bytes(key: bytes, name: str, data: bytes) -> bytes:
    """The plaintext of a whole object held in memory (the manifest)."""
    decryptor = Decryptor(key, name)
    return decryptor.update(data) + decryptor.finish()


def _parts(pieces: Iterator[bytes], part_size: int) -> Iterator[bytes]:
    """The ciphertext regrouped into parts of ``part_size`` bytes (the last may be shorter)."""
    buffer = bytearray()
    for piece in pieces:
        buffer += piece
        while len(buffer) >= part_size:
            yield bytes(buffer[:part_size])
            del buffer[:part_size]
    if buffer:
        yield bytes(buffer)


def multipart_etag(part_md5s: list[bytes]) -> str:
    """The ETag S3 gives a multipart upload: md5 of the parts' md5s, then -N."""
    digest = hashlib.md5(b"".join(part_md5s), usedforsecurity=False)
    return f"{digest.hexdigest()}-{len(part_md5s)}"


def _md5(data: bytes) -> bytes:
    # S3's Content-MD5 and ETag are md5: an integrity check, not security.
    return hashlib.md5(data, usedforsecurity=False).digest()


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _etag_is_md5(answer: dict) -> bool:
    """Whether S3's ETag in ``answer`` is the md5 of the bytes: not under SSE-KMS,
    where it is opaque (the server checked Content-MD5 then, and size and sha256
    metadata still are compared)."""
    return not str(answer.get("ServerSideEncryption", "")).startswith("aws:kms")


# --- boto3 ----------------------------------------------------------------------


def _botocore():
    try:
        import boto3
        import botocore.config
        import botocore.exceptions
    except ImportError as exc:
        raise OffsiteError(
            f"offsite copies need boto3 (python3-boto3): install it on this host ({exc})"
        ) from exc
    return boto3, botocore


def _retryable_exceptions() -> tuple[type[BaseException], ...]:
    """Transport errors worth another attempt, as this botocore and urllib3 name them."""
    _, botocore = _botocore()
    exc = botocore.exceptions
    found: list[type[BaseException]] = [exc.ConnectionError, exc.HTTPClientError]
    for name in ("IncompleteReadError", "ResponseStreamingError", "ReadTimeoutError"):
        if hasattr(exc, name):
            found.append(getattr(exc, name))
    try:
        import urllib3.exceptions

        found.append(urllib3.exceptions.HTTPError)  # a body read that broke (botocore < 1.29)
    except ImportError:  # pragma: no cover - botocore depends on urllib3
        pass
    return tuple(found)


@dataclass
class _Upload:
    """What one object's upload produced (and its integrity check compares)."""

    file: str
    key: str
    size: int
    etag: str
    sha256: str
    parts: int


class Offsite:
    """One bucket and prefix holding a host's offsite restore points.

    ``encryption_key`` is the vault's 32 random bytes as hex or base64.
    ``access_key_id``/``secret_access_key`` None: boto3's default chain
    (environment, instance profile). ``endpoint_url`` None: AWS; anything else
    (MinIO, Ceph, Wasabi, moto) is addressed path-style. ``max_attempts`` counts
    every try of one request; between tries it waits a random time up to
    ``backoff_base * 2**(try - 1)`` seconds, at most ``backoff_cap`` (``sleep``
    is how it waits, for tests).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str,
        encryption_key: str | bytes,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not bucket:
            raise OffsiteError("the offsite bucket's name is empty: name the bucket to copy to")
        if not MIN_PART_SIZE <= int(part_size) <= MAX_PART_SIZE:
            raise OffsiteError(
                f"part_size {part_size} is outside {MIN_PART_SIZE} (5 MiB, S3's smallest part) "
                f"to {MAX_PART_SIZE} (1 GiB, one part is held in memory)"
            )
        if int(max_attempts) < 1:
            raise OffsiteError(f"max_attempts is {max_attempts}: at least 1 attempt is needed")
        if backoff_base < 0 or backoff_cap < 0:
            raise OffsiteError("backoff_base and backoff_cap are seconds, not negative")
        if (access_key_id is None) != (secret_access_key is None):
            raise OffsiteError("give both access_key_id and secret_access_key, or neither")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.key = parse_key(encryption_key)
        self.key_id = key_id(self.key)
        self.part_size = int(part_size)
        self.max_attempts = int(max_attempts)
        self.backoff_base = float(backoff_base)
        self.backoff_cap = float(backoff_cap)
        self._sleep = sleep
        self._client_args = {
            "endpoint_url": endpoint_url,
            "region_name": region,
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
        }
        self._timeouts = (float(connect_timeout), float(read_timeout))
        self._client = None

    # --- requests ---

    @property
    def client(self):
        """The S3 client, made on first use (boto3 is imported then)."""
        if self._client is None:
            boto3, botocore = _botocore()
            options = {
                "connect_timeout": self._timeouts[0],
                "read_timeout": self._timeouts[1],
                # One attempt per call: the retries are ours, bounded and counted.
                "retries": {"total_max_attempts": 1, "mode": "standard"},
                "signature_version": "s3v4",
            }
            if self._client_args["endpoint_url"]:
                options["s3"] = {"addressing_style": "path"}
            try:  # botocore >= 1.36 adds CRC checksums that older S3 clones refuse
                config = botocore.config.Config(
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    **options,
                )
            except TypeError:
                config = botocore.config.Config(**options)
            session = boto3.session.Session()
            self._client = session.client("s3", config=config, **self._client_args)
        return self._client

    def _delay(self, attempt: int) -> float:
        """Full jitter: a uniform pick up to the exponential backoff (AWS's advice)."""
        ceiling = min(self.backoff_cap, self.backoff_base * (2 ** (attempt - 1)))
        return random.uniform(0, ceiling)  # noqa: S311  jitter, not cryptography

    def _call(self, what: str, fn: Callable[[], object]):
        """``fn()`` with our retries; an OffsiteError naming ``what`` when it fails for good."""
        _, botocore = _botocore()
        transport = _retryable_exceptions()
        for attempt in range(1, self.max_attempts + 1):
            try:
                return fn()
            except botocore.exceptions.ClientError as exc:
                error = exc.response.get("Error", {})
                code = str(error.get("Code", ""))
                status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
                retry = status >= 500 or status == 429 or code in _RETRY_CODES
                reason = f"{code or status}: {error.get('Message', '') or exc}"
                if not retry:
                    raise OffsiteError(
                        f"{what} failed: {reason}", code=code or str(status)
                    ) from exc
            except transport as exc:
                code, reason = None, f"{type(exc).__name__}: {exc}"
            if attempt == self.max_attempts:
                raise OffsiteError(
                    f"{what} failed after {attempt} attempts, the last with {reason}",
                    code=code,
                )
            self._sleep(self._delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _head(self, key: str) -> dict | None:
        """The object's HEAD answer, None when there is no such object."""
        try:
            return self._call(
                f"HEAD s3://{self.bucket}/{key}",
                lambda: self.client.head_object(Bucket=self.bucket, Key=key),
            )
        except OffsiteError as exc:
            if exc.code in _NOT_FOUND:
                return None
            raise

    def _list_keys(self, prefix: str) -> list[dict]:
        """Every object under ``prefix`` (Key, Size), following the pages."""
        found, token = [], None
        while True:
            args = {"Bucket": self.bucket, "Prefix": prefix}
            if token:
                args["ContinuationToken"] = token
            page = self._call(
                f"listing s3://{self.bucket}/{prefix}",
                lambda args=args: self.client.list_objects_v2(**args),
            )
            found.extend(page.get("Contents", []))
            if not page.get("IsTruncated"):
                return found
            token = page["NextContinuationToken"]

    def _multipart_uploads(self, prefix: str) -> list[dict]:
        """Multipart uploads in progress under ``prefix`` (Key, UploadId)."""
        found, markers = [], {}
        while True:
            page = self._call(
                f"listing the multipart uploads under s3://{self.bucket}/{prefix}",
                lambda markers=markers: self.client.list_multipart_uploads(
                    Bucket=self.bucket, Prefix=prefix, **markers
                ),
            )
            found.extend(page.get("Uploads", []))
            if not page.get("IsTruncated"):
                return found
            markers = {
                "KeyMarker": page["NextKeyMarker"],
                "UploadIdMarker": page["NextUploadIdMarker"],
            }

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._call(
                f"aborting the multipart upload {upload_id} of {key}",
                lambda: self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id
                ),
            )
        except OffsiteError as exc:
            if exc.code != "NoSuchUpload":
                raise

    def abort_stale_uploads(self, prefix: str, exact: bool = False) -> list[str]:
        """Abort the multipart uploads under ``prefix`` (or of that key only): what runs
        that died left behind, which S3 bills for and keeps forever. Returns their keys."""
        aborted = []
        for upload in self._multipart_uploads(prefix):
            if exact and upload["Key"] != prefix:
                continue
            self._abort(upload["Key"], upload["UploadId"])
            aborted.append(upload["Key"])
        return aborted

    def _delete(self, key: str) -> None:
        self._call(
            f"deleting s3://{self.bucket}/{key}",
            lambda: self.client.delete_object(Bucket=self.bucket, Key=key),
        )

    # --- keys ---

    def _points_prefix(self) -> str:
        return f"{self.prefix}/{POINTS_DIR}/" if self.prefix else f"{POINTS_DIR}/"

    def _point_prefix(self, pid: str) -> str:
        if parse_point_id(pid) is None:
            raise OffsiteError(f"{pid!r} is not a point id (like 20261202T020000Z-daily)")
        return f"{self._points_prefix()}{pid}/"

    def object_key(self, pid: str, file: str) -> str:
        """The key of the object that holds ``file`` of point ``pid``."""
        return f"{self._point_prefix(pid)}{file}{SUFFIX}"

    # --- upload ---

    def _metadata(self, sha256: str, plain_sha256: str, plain_size: int) -> dict[str, str]:
        return {
            META_FORMAT: str(FORMAT_VERSION),
            META_KEY_ID: self.key_id,
            META_SHA256: sha256,
            META_PLAIN_SHA256: plain_sha256,
            META_PLAIN_SIZE: str(plain_size),
        }

    def _put(self, key: str, body: bytes, metadata: dict[str, str]) -> str:
        """A single PUT with Content-MD5 (the server refuses a body that differs); its ETag."""
        md5 = _md5(body)
        answer = self._call(
            f"uploading s3://{self.bucket}/{key}",
            lambda: self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentMD5=_b64(md5),
                ContentType="application/octet-stream",
                Metadata=metadata,
            ),
        )
        etag = md5.hex()
        if not _etag_is_md5(answer):
            return answer.get("ETag", "").strip('"')
        if answer.get("ETag", "").strip('"') != etag:
            self._delete(key)
            raise OffsiteError(
                f"s3://{self.bucket}/{key}: the server answered ETag {answer.get('ETag')}, "
                f"the upload's md5 is {etag}: deleted it, upload again"
            )
        return etag

    def _upload_small(self, file: str, key: str, body: bytes, plain: tuple[str, int]) -> _Upload:
        sha256 = hashlib.sha256(body).hexdigest()
        etag = self._put(key, body, self._metadata(sha256, *plain))
        return _Upload(file, key, len(body), etag, sha256, 1)

    def _upload_large(self, file: str, key: str, path: str, pid: str, plain: tuple) -> _Upload:
        """A multipart upload of the file at ``path``: a pass to hash, a pass to upload."""
        encryptor = Encryptor(self.key, f"{pid}/{file}")
        plain_hash, ct_hash, part_md5s, size = hashlib.sha256(), hashlib.sha256(), [], 0
        counted = [0]
        for part in _parts(encryptor.pieces(path, plain_hash, counted), self.part_size):
            ct_hash.update(part)
            part_md5s.append(_md5(part))
            size += len(part)
        plain_sha256, plain_size = plain_hash.hexdigest(), counted[0]
        if (plain_sha256, plain_size) != plain:
            raise OffsiteError(
                f"{path} has sha256 {plain_sha256[:16]}... and {plain_size} bytes, its manifest "
                f"says {plain[0][:16]}... and {plain[1]}: the local point is damaged, "
                "not uploading it"
            )
        if len(part_md5s) > MAX_PARTS:
            raise OffsiteError(
                f"{path} would be {len(part_md5s)} parts of {self.part_size} bytes, S3 takes "
                f"{MAX_PARTS}: raise the part size"
            )
        sha256 = ct_hash.hexdigest()
        created = self._call(
            f"starting the multipart upload of s3://{self.bucket}/{key}",
            lambda: self.client.create_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                ContentType="application/octet-stream",
                Metadata=self._metadata(sha256, *plain),
            ),
        )
        upload_id = created["UploadId"]
        try:
            done = []
            for number, part in enumerate(_parts(encryptor.pieces(path), self.part_size), start=1):
                md5 = _md5(part)
                if number > len(part_md5s) or md5 != part_md5s[number - 1]:
                    raise OffsiteError(f"{path} changed while it was uploaded: upload again")
                answer = self._call(
                    f"uploading part {number}/{len(part_md5s)} of s3://{self.bucket}/{key}",
                    lambda part=part, number=number, md5=md5: self.client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=part,
                        ContentMD5=_b64(md5),
                    ),
                )
                if _etag_is_md5(answer) and answer.get("ETag", "").strip('"') != md5.hex():
                    raise OffsiteError(
                        f"part {number} of s3://{self.bucket}/{key}: the server answered ETag "
                        f"{answer.get('ETag')}, the part's md5 is {md5.hex()}"
                    )
                done.append({"PartNumber": number, "ETag": answer["ETag"]})
            if len(done) != len(part_md5s):
                raise OffsiteError(f"{path} changed while it was uploaded: upload again")
            etag = self._complete(key, upload_id, done, multipart_etag(part_md5s))
        except BaseException:
            # No partial object under the final key: abort this upload, and any
            # that a retried create left behind.
            try:
                self._abort(key, upload_id)
                self.abort_stale_uploads(key, exact=True)
            except OffsiteError:
                pass  # the error that got us here is the one to report
            raise
        # A create that was retried may have left another upload of this key.
        self.abort_stale_uploads(key, exact=True)
        return _Upload(file, key, size, etag, sha256, len(part_md5s))

    def _complete(self, key: str, upload_id: str, parts: list[dict], etag: str) -> str:
        """Complete the upload; the ETag to expect (ours, or S3's opaque one under SSE-KMS)."""
        try:
            answer = self._call(
                f"completing the multipart upload of s3://{self.bucket}/{key}",
                lambda: self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                ),
            )
        except OffsiteError as exc:
            # A retry after an answer that got lost: the first attempt completed it.
            head = self._head(key) if exc.code == "NoSuchUpload" else None
            if head is None or (_etag_is_md5(head) and head.get("ETag", "").strip('"') != etag):
                raise
            answer = head
        return etag if _etag_is_md5(answer) else answer.get("ETag", "").strip('"')

    def _check(self, upload: _Upload) -> None:
        """The integrity check after an upload: the object is the bytes we sent."""
        head = self._head(upload.key)
        problems = []
        if head is None:
            problems.append("it does not exist")
        else:
            if head.get("ContentLength") != upload.size:
                problems.append(f"{head.get('ContentLength')} bytes, we sent {upload.size}")
            if head.get("ETag", "").strip('"') != upload.etag:
                problems.append(f"ETag {head.get('ETag')}, we computed {upload.etag}")
            stored = head.get("Metadata", {}).get(META_SHA256)
            if stored != upload.sha256:
                problems.append(f"sha256 metadata {stored}, we computed {upload.sha256}")
        if problems:
            if head is not None:
                self._delete(upload.key)
            raise OffsiteError(
                f"s3://{self.bucket}/{upload.key} failed its check after upload "
                f"({'; '.join(problems)}): deleted it, upload again"
            )

    def _current(self, key: str, plain: tuple[str, int]) -> bool:
        """Whether ``key`` already holds this plaintext, checked, with our key (a resumed run)."""
        head = self._head(key)
        if head is None:
            return False
        meta = head.get("Metadata", {})
        return (
            meta.get(META_KEY_ID) == self.key_id
            and meta.get(META_PLAIN_SHA256) == plain[0]
            and meta.get(META_PLAIN_SIZE) == str(plain[1])
        )

    def upload_point(self, point_dir: str) -> dict:
        """Encrypt and upload the complete restore point in ``point_dir``, manifest last.

        An artifact whose object already holds the same plaintext (a run that
        died after it) is not sent again; a point whose manifest object exists
        and matches is left as it is (``changed`` false). Raises OffsiteError,
        after aborting what it started, when anything fails for good.
        """
        started = time.monotonic()
        manifest = read_manifest(point_dir)
        pid = manifest["id"]
        prefix = self._point_prefix(pid)
        manifest_path = os.path.join(point_dir, MANIFEST)
        manifest_plain = sha256_file(manifest_path)
        manifest_key = self.object_key(pid, MANIFEST)
        head = self._head(manifest_key)
        meta = (head or {}).get("Metadata", {})
        if (
            head is not None
            and meta.get(META_VERIFIED)
            and meta.get(META_PLAIN_SHA256) == manifest_plain[0]
            and meta.get(META_KEY_ID) == self.key_id
        ):
            return {
                "id": pid,
                "changed": False,
                "uploaded": [],
                "skipped": [a["file"] for a in manifest["artifacts"]] + [MANIFEST],
                "aborted_uploads": [],
                "bytes": 0,
                "verified": meta[META_VERIFIED],
                "seconds": round(time.monotonic() - started, 3),
            }
        if head is not None:
            self._delete(manifest_key)  # a different or unchecked point: incomplete first
        aborted = self.abort_stale_uploads(prefix)
        uploaded, skipped, sent = [], [], 0
        for artifact in sorted(manifest["artifacts"], key=lambda a: a["file"]):
            file = artifact["file"]
            path = os.path.join(point_dir, file)
            key = self.object_key(pid, file)
            plain = (artifact["sha256"], int(artifact["size"]))
            if not os.path.isfile(path):
                raise OffsiteError(f"{path} is in the manifest but missing: the point is damaged")
            if self._current(key, plain):
                skipped.append(file)
                continue
            if ciphertext_size(plain[1]) <= self.part_size:
                upload = self._upload_small(file, key, self._encrypt_small(path, pid, plain), plain)
            else:
                upload = self._upload_large(file, key, path, pid, plain)
            self._check(upload)
            uploaded.append(file)
            sent += upload.size
        with open(manifest_path, "rb") as handle:
            manifest_bytes = handle.read()
        body = Encryptor(self.key, f"{pid}/{MANIFEST}").encrypt_bytes(manifest_bytes)
        checked = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        metadata = self._metadata(hashlib.sha256(body).hexdigest(), *manifest_plain)
        metadata[META_VERIFIED] = checked
        etag = self._put(manifest_key, body, metadata)
        self._check(_Upload(MANIFEST, manifest_key, len(body), etag, metadata[META_SHA256], 1))
        return {
            "id": pid,
            "changed": True,
            "uploaded": uploaded + [MANIFEST],
            "skipped": skipped,
            "aborted_uploads": aborted,
            "bytes": sent + len(body),
            "verified": checked,
            "seconds": round(time.monotonic() - started, 3),
        }

    def _encrypt_small(self, path: str, pid: str, plain: tuple[str, int]) -> bytes:
        """A file that fits one part, encrypted in memory, checked against its manifest."""
        with open(path, "rb") as handle:
            data = handle.read(self.part_size + 1)
        digest = hashlib.sha256(data).hexdigest()
        if (digest, len(data)) != plain:
            raise OffsiteError(
                f"{path} has sha256 {digest[:16]}... and {len(data)} bytes, its manifest says "
                f"{plain[0][:16]}... and {plain[1]}: the local point is damaged, not uploading it"
            )
        return Encryptor(self.key, f"{pid}/{os.path.basename(path)}").encrypt_bytes(data)

    # --- reading back ---

    def list_points(self) -> list[dict]:
        """The offsite points, oldest first: id, created, scope, complete, verified, objects.

        Keys that are not ``<prefix>/points/<id>/<file>.enc`` are not ours and ignored.
        """
        root = self._points_prefix()
        points: dict[str, dict] = {}
        for obj in self._list_keys(root):
            rest = obj["Key"][len(root) :]
            pid, _, name = rest.partition("/")
            parsed = parse_point_id(pid)
            if parsed is None or "/" in name or not name.endswith(SUFFIX) or name == SUFFIX:
                continue
            point = points.setdefault(
                pid,
                {
                    "id": pid,
                    "created": parsed[0],
                    "scope": parsed[1],
                    "complete": False,
                    "verified": None,
                    "objects": 0,
                    "size": 0,
                },
            )
            point["objects"] += 1
            point["size"] += int(obj.get("Size", 0))
            if name == MANIFEST + SUFFIX:
                point["complete"] = True
        for point in points.values():
            if point["complete"]:
                head = self._head(self.object_key(point["id"], MANIFEST))
                if head is None:  # deleted since the listing
                    point["complete"] = False
                else:
                    point["verified"] = head.get("Metadata", {}).get(META_VERIFIED)
        return sorted(points.values(), key=lambda p: (p["created"], p["id"]))

    def _get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` (inclusive) of an object, retried as one request."""

        def fetch() -> bytes:
            answer = self.client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end}"
            )
            data = answer["Body"].read()
            if len(data) != end - start + 1:
                _, botocore = _botocore()
                raise botocore.exceptions.IncompleteReadError(
                    actual_bytes=len(data), expected_bytes=end - start + 1
                )
            return data

        return self._call(f"downloading bytes {start}-{end} of s3://{self.bucket}/{key}", fetch)

    def _read_object(self, pid: str, file: str, sink: Callable[[bytes], None] | None) -> dict:
        """Download and decrypt one object, a part at a time, into ``sink``.

        Returns sha256 and size of the plaintext; raises OffsiteError (DecryptError
        for bytes that do not authenticate) when the object is missing or damaged.
        """
        key = self.object_key(pid, file)
        head = self._head(key)
        if head is None:
            raise OffsiteError(f"s3://{self.bucket}/{key} does not exist", code="404")
        size = int(head["ContentLength"])
        decryptor = Decryptor(self.key, f"{pid}/{file}")
        ct_hash, plain_hash, plain_size = hashlib.sha256(), hashlib.sha256(), 0
        for start in range(0, size, self.part_size):
            data = self._get_range(key, start, min(size, start + self.part_size) - 1)
            ct_hash.update(data)
            plain = decryptor.update(data)
            plain_hash.update(plain)
            plain_size += len(plain)
            if sink:
                sink(plain)
        plain = decryptor.finish()
        plain_hash.update(plain)
        plain_size += len(plain)
        if sink:
            sink(plain)
        stored = head.get("Metadata", {}).get(META_SHA256)
        if stored != ct_hash.hexdigest():
            raise OffsiteError(
                f"s3://{self.bucket}/{key} has sha256 {ct_hash.hexdigest()[:16]}..., its "
                f"metadata says {str(stored)[:16]}..."
            )
        return {"sha256": plain_hash.hexdigest(), "size": plain_size}

    def _read_manifest(self, pid: str) -> tuple[dict, bytes]:
        chunks: list[bytes] = []
        try:
            self._read_object(pid, MANIFEST, chunks.append)
        except OffsiteError as exc:
            if exc.code == "404":
                raise OffsiteError(
                    f"the offsite point {pid} has no manifest object: it is not complete "
                    "(an upload that died, or a delete under way)",
                    code="404",
                ) from exc
            raise
        data = b"".join(chunks)
        source = f"s3://{self.bucket}/{self.object_key(pid, MANIFEST)}"
        manifest = parse_manifest(data.decode("utf-8", errors="replace"), source)
        if manifest["id"] != pid:
            raise ManifestError(f"{source} describes {manifest['id']}, not {pid}")
        return manifest, data

    @staticmethod
    def _compare(artifact: dict, got: dict) -> list[str]:
        problems = []
        if got["size"] != artifact["size"]:
            problems.append(
                f"{artifact['file']} is {got['size']} bytes, the manifest says {artifact['size']}"
            )
        elif got["sha256"] != artifact["sha256"]:
            problems.append(
                f"{artifact['file']} has sha256 {got['sha256'][:16]}..., the manifest says "
                f"{artifact['sha256'][:16]}..."
            )
        return problems

    def verify_point(self, point_id: str) -> list[str]:
        """What is wrong with an offsite point (empty: nothing), from a full download.

        Every object is downloaded and decrypted and its plaintext compared with
        the manifest; an object the manifest does not list is a problem too.
        """
        try:
            manifest, _ = self._read_manifest(point_id)
        except (OffsiteError, ManifestError) as exc:
            return [str(exc)]
        problems = []
        listed = {a["file"] + SUFFIX for a in manifest["artifacts"]} | {MANIFEST + SUFFIX}
        prefix = self._point_prefix(point_id)
        for obj in self._list_keys(prefix):
            if obj["Key"][len(prefix) :] not in listed:
                problems.append(f"{obj['Key']} is not in the manifest")
        for artifact in manifest["artifacts"]:
            try:
                got = self._read_object(point_id, artifact["file"], None)
            except OffsiteError as exc:
                problems.append(str(exc))
                continue
            problems.extend(self._compare(artifact, got))
        return problems

    def download_point(self, point_id: str, dest_dir: str) -> str:
        """Download and decrypt a complete offsite point into ``dest_dir/<id>``; its path.

        The files land in a hidden directory next to it, each checked against
        the manifest, the manifest last; the directory is renamed into place
        only then, so a failure leaves nothing behind and nothing partial looks
        like a restore point.
        """
        target = os.path.join(dest_dir, point_id)
        if os.path.lexists(target):
            raise OffsiteError(
                f"{target} already exists: move it away to download {point_id} again"
            )
        manifest, manifest_bytes = self._read_manifest(point_id)
        os.makedirs(dest_dir, exist_ok=True)
        staging = os.path.join(dest_dir, f".{point_id}.partial-{os.getpid()}")
        if os.path.lexists(staging):
            shutil.rmtree(staging)
        os.mkdir(staging, 0o700)
        try:
            for artifact in manifest["artifacts"]:
                path = os.path.join(staging, artifact["file"])
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    got = self._read_object(point_id, artifact["file"], handle.write)
                    handle.flush()
                    os.fsync(handle.fileno())
                problems = self._compare(artifact, got)
                if problems:
                    raise OffsiteError(f"offsite point {point_id}: {'; '.join(problems)}")
            write_file_atomic(os.path.join(staging, MANIFEST), manifest_bytes)
            os.rename(staging, target)
            fsync_dir(dest_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target

    # --- deleting ---

    def delete_point(self, point_id: str) -> list[str]:
        """Delete an offsite point, its manifest object first; the keys deleted.

        With the manifest gone first, a delete that dies half-way leaves an
        incomplete point (which retention removes later), never one that looks
        complete with files missing.
        """
        prefix = self._point_prefix(point_id)
        manifest_key = self.object_key(point_id, MANIFEST)
        deleted = []
        if self._head(manifest_key) is not None:
            self._delete(manifest_key)
            deleted.append(manifest_key)
        self.abort_stale_uploads(prefix)
        for obj in self._list_keys(prefix):
            self._delete(obj["Key"])
            deleted.append(obj["Key"])
        return deleted

    def apply_retention(
        self,
        now: dt.datetime,
        keep_days: float,
        minimum_redundancy: int = 1,
        protect: tuple[str, ...] = (),
    ) -> RetentionPlan:
        """Delete the offsite points that ytempire_backup's retention rule lets go.

        A point counts as verified when its manifest object exists and carries
        the mark of the integrity check that its upload passed.
        """
        infos = [
            PointInfo(
                id=p["id"],
                created=p["created"],
                scope=p["scope"],
                verified=bool(p["complete"] and p["verified"]),
            )
            for p in self.list_points()
        ]
        plan = plan_retention(infos, now, keep_days, minimum_redundancy, tuple(protect))
        for pid in plan.delete:
            self.delete_point(pid)
        return plan
