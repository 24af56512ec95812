"""Bad input gets a clear 4xx and creates no job (the jobs table is counted)."""

from __future__ import annotations

import base64
import struct
import uuid
import zlib
from typing import Any

import pytest
from PIL import Image
from ytvideo.schemas import MAX_IMAGE_PIXELS, decode_image
from ytvideo_services import PostgresServer, Stack

GOOD: dict[str, Any] = {
    "title": "Valid",
    "script": "A valid script.",
    "resolution": "320x180",
    "duration": 2,
}


def job_count(postgres: PostgresServer) -> int:
    return postgres.query("SELECT count(*) FROM video_jobs")[0][0]


def fields(response: Any) -> list[str]:
    return [e["field"] for e in response.json()["errors"]]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"script": None}, "body.script", "Field required"),
        ({"script": "   "}, "body.script", "at least 1 character"),
        ({"title": ""}, "body.title", "at least 1 character"),
        ({"resolution": "100000x100000"}, "resolution", "outside the supported range"),
        ({"resolution": "321x180"}, "resolution", "must be even"),
        ({"resolution": "big"}, "resolution", "is not a resolution"),
        ({"duration": -5}, "body.duration", "greater than 0"),
        ({"duration": 0}, "body.duration", "greater than 0"),
        ({"duration": 86400}, "duration", "longer than the limit"),
        ({"fps": 500}, "body.fps", "less than or equal to 60"),
        ({"images": ["not base64!"]}, "images.0", "not valid base64"),
        ({"images": [base64.b64encode(b"plain text").decode()]}, "images.0", "not a readable"),
        ({"colour": "red"}, "body.colour", "Extra inputs are not permitted"),
    ],
)
def test_invalid_requests_are_rejected_without_a_job(
    stack: Stack, postgres: PostgresServer, change: dict[str, Any], field: str, message: str
) -> None:
    before = job_count(postgres)
    body = {k: v for k, v in (GOOD | change).items() if v is not None}
    response = stack.client.post("/api/videos/generate", json=body)
    assert response.status_code == 422, response.text
    errors = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert field in errors, errors
    assert message in errors[field]
    assert job_count(postgres) == before


def test_malformed_json_is_rejected(stack: Stack, postgres: PostgresServer) -> None:
    before = job_count(postgres)
    response = stack.client.post(
        "/api/videos/generate", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"] == "invalid request"
    assert job_count(postgres) == before


def test_oversized_body_is_refused_with_413(stack: Stack, postgres: PostgresServer) -> None:
    before = job_count(postgres)
    body = GOOD | {"script": "x" * (3 * 1024 * 1024)}  # the stack allows 2 MiB
    response = stack.client.post("/api/videos/generate", json=body)
    assert response.status_code == 413
    assert "MAX_REQUEST_BYTES" in response.json()["detail"]
    assert job_count(postgres) == before


def test_oversized_chunked_body_is_refused_with_413(stack: Stack, postgres: PostgresServer) -> None:
    """No Content-Length to trust: the limit is enforced while reading."""
    before = job_count(postgres)

    def chunks() -> Any:
        yield b'{"title": "t", "duration": 1, "script": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}'

    response = stack.client.post(
        "/api/videos/generate", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert job_count(postgres) == before


def test_unknown_job_is_404(stack: Stack) -> None:
    job_id = uuid.uuid4()
    response = stack.client.get(f"/api/videos/{job_id}")
    assert response.status_code == 404
    assert str(job_id) in response.json()["detail"]
    assert stack.client.get(f"/api/videos/{job_id}/file").status_code == 404


def test_malformed_job_id_is_422(stack: Stack) -> None:
    response = stack.client.get("/api/videos/not-a-uuid")
    assert response.status_code == 422
    assert fields(response) == ["path.video_id"]


def blank_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit greyscale PNG: a few kB whatever the size it declares."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def test_the_generated_png_is_a_real_image() -> None:
    data = blank_png(640, 360)
    assert decode_image(base64.b64encode(data).decode(), 0) == data


@pytest.mark.parametrize(
    ("side", "pillow"),
    [
        (20_000, "error"),  # over twice Pillow's limit: DecompressionBombError at open
        (10_000, "warning"),  # over Pillow's limit: DecompressionBombWarning, then our check
        (7_000, "quiet"),  # over our limit only
    ],
)
def test_an_image_with_too_many_pixels_is_a_422(
    stack: Stack, postgres: PostgresServer, side: int, pillow: str
) -> None:
    ratio = side * side / Image.MAX_IMAGE_PIXELS
    assert {"error": ratio > 2, "warning": 1 < ratio <= 2, "quiet": ratio <= 1}[pillow]
    assert side * side > MAX_IMAGE_PIXELS
    png = blank_png(side, side)
    assert len(png) < 100_000  # small on the wire, huge once decoded
    before = job_count(postgres)
    body = GOOD | {"images": [base64.b64encode(png).decode()]}
    response = stack.client.post("/api/videos/generate", json=body)
    assert response.status_code == 422, f"{side}x{side}: {response.status_code} {response.text}"
    assert response.json()["detail"] == "invalid request"
    errors = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert "pixels" in errors["images.0"], errors
    assert str(MAX_IMAGE_PIXELS) in errors["images.0"]
    assert job_count(postgres) == before


def test_database_error_text_is_not_returned_to_clients(
    stack: Stack, postgres: PostgresServer
) -> None:
    """A failing statement is a 503 that names no table, SQL, host or port; the log has it."""
    postgres.query("ALTER TABLE video_jobs RENAME TO video_jobs_away")
    try:
        response = stack.client.get(f"/api/videos/{uuid.uuid4()}")
    finally:
        postgres.query("ALTER TABLE video_jobs_away RENAME TO video_jobs")
    assert response.status_code == 503, response.text
    assert response.json()["detail"] == "the job store is unavailable; retry later"
    for leak in ("video_jobs", "relation", "PostgreSQL", "SELECT", "127.0.0.1", str(postgres.port)):
        assert leak not in response.text, response.text
    assert 'relation "video_jobs" does not exist' in stack.logs()
