"""A user links a YouTube channel and a finished video is uploaded to it, end to end.

The API and a real worker (queue ``youtube``) run against real PostgreSQL and
Redis; the token endpoint and the resumable upload are the emulator's
(ytvideo_youtube_emulator.py), reached over HTTP like Google's. The chunked
protocol itself, interrupted chunks included, is tested in test_ytvideo_youtube.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from ytvideo.youtube import TokenCipher, YouTubeSettings, channel_context
from ytvideo_services import YOUTUBE_TOKEN_KEY, PostgresServer, Stack, metric_value, wait_for
from ytvideo_youtube_emulator import YouTubeEmulator

VIDEO = {"title": "Channel <upload>", "script": "Linked, rendered, uploaded.", "duration": 2}


@pytest.fixture
def emulator(youtube_api: YouTubeEmulator) -> Iterator[YouTubeEmulator]:
    youtube_api.state.reset()
    yield youtube_api
    youtube_api.state.reset()


@pytest.fixture
def linked(youtube_stack: Stack, emulator: YouTubeEmulator) -> Stack:
    answer = youtube_stack.client.put(
        "/api/youtube/channel", json={"refresh_token": emulator.state.refresh_token}
    )
    assert answer.status_code == 200, answer.text
    return youtube_stack


def admin_id(postgres: PostgresServer) -> int:
    ((user_id,),) = postgres.query("SELECT id FROM users WHERE username = 'admin'")
    return user_id


def submit(stack: Stack, privacy: str = "private") -> str:
    answer = stack.generate(**VIDEO, resolution="192x108", youtube={"privacy": privacy})
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def upload_reaches(stack: Stack, job_id: str, status: str, timeout: float = 120) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        doc = stack.client.get(f"/api/videos/{job_id}").json()
        return doc if (doc["youtube"] or {}).get("status") == status else None

    return wait_for(f"upload of {job_id} {status}", reached, timeout, stack.logs)


def test_a_server_without_youtube_settings_refuses_uploads(stack: Stack) -> None:
    assert stack.client.get("/api/youtube/channel").json()["configured"] is False
    answer = stack.client.put("/api/youtube/channel", json={"refresh_token": "1//anything"})
    assert answer.status_code == 503, answer.text
    before = stack.client.get("/api/videos").json()["videos"]
    answer = stack.generate(**VIDEO, resolution="192x108", youtube={"privacy": "private"})
    assert answer.status_code == 422, answer.text
    assert "YOUTUBE_TOKEN_KEY" in answer.json()["detail"]
    assert stack.client.get("/api/videos").json()["videos"] == before


def test_a_refused_token_is_not_stored_and_a_good_one_is_stored_encrypted(
    youtube_stack: Stack, emulator: YouTubeEmulator, postgres: PostgresServer
) -> None:
    youtube_stack.client.delete("/api/youtube/channel")
    answer = youtube_stack.client.put("/api/youtube/channel", json={"refresh_token": "1//revoked"})
    assert answer.status_code == 422, answer.text
    assert "refused" in answer.json()["detail"]
    assert postgres.query("SELECT count(*) FROM youtube_channels") == [(0,)]
    assert youtube_stack.client.get("/api/youtube/channel").json()["linked"] is False

    token = emulator.state.refresh_token
    answer = youtube_stack.client.put("/api/youtube/channel", json={"refresh_token": token})
    assert answer.status_code == 200, answer.text
    ((stored,),) = postgres.query("SELECT refresh_token_encrypted FROM youtube_channels")
    assert token not in stored
    cipher = TokenCipher.from_settings(YouTubeSettings(token_key=YOUTUBE_TOKEN_KEY))
    assert cipher.decrypt(stored, channel_context(admin_id(postgres))) == token
    assert youtube_stack.client.get("/api/youtube/channel").json()["linked"] is True


def test_a_job_asking_for_youtube_without_a_channel_is_refused_before_anything_is_stored(
    youtube_stack: Stack, emulator: YouTubeEmulator
) -> None:
    youtube_stack.client.delete("/api/youtube/channel")
    before = youtube_stack.client.get("/api/videos").json()["videos"]
    answer = youtube_stack.generate(**VIDEO, youtube={"privacy": "unlisted"})
    assert answer.status_code == 422, answer.text
    assert "link a YouTube channel first" in answer.json()["detail"]
    assert youtube_stack.client.get("/api/videos").json()["videos"] == before


def test_a_finished_video_is_uploaded_and_its_youtube_id_recorded(
    linked: Stack, emulator: YouTubeEmulator
) -> None:
    job_id = submit(linked, "unlisted")
    job = upload_reaches(linked, job_id, "uploaded")
    assert job["status"] == "completed"
    (session,) = emulator.state.completed()
    assert job["youtube"]["video_id"] == session.video["id"]
    assert job["youtube"]["url"] == f"https://www.youtube.com/watch?v={session.video['id']}"
    # The bytes YouTube holds are the file the API serves.
    served = linked.client.get(f"/api/videos/{job_id}/file")
    assert served.status_code == 200
    assert hashlib.sha256(session.data).digest() == hashlib.sha256(served.content).digest()
    # The metadata as YouTube takes it: no angle brackets.
    assert session.metadata["snippet"]["title"] == "Channel (upload)"
    assert session.metadata["snippet"]["description"] == VIDEO["script"]
    assert session.metadata["status"]["privacyStatus"] == "unlisted"
    assert metric_value(linked.metrics(), "ytvideo_youtube_uploads_total", status="uploaded") >= 1
    # A second message for the same job (a redelivery, the sweep) uploads nothing more.
    assert len(emulator.state.completed()) == 1


def test_a_quota_refusal_waits_for_the_reset_then_uploads(
    linked: Stack, emulator: YouTubeEmulator, postgres: PostgresServer
) -> None:
    emulator.state.quota_reason = "quotaExceeded"
    job_id = submit(linked)
    job = upload_reaches(linked, job_id, "waiting", timeout=120)
    job = wait_for(
        "the quota refusal recorded",
        lambda: (d := linked.client.get(f"/api/videos/{job_id}").json())["youtube"]["error"] and d,
        60,
        linked.logs,
    )
    assert "quota" in job["youtube"]["error"]
    # Next midnight in California, computed here on its own.
    pacific = datetime.now(ZoneInfo("America/Los_Angeles"))
    reset = (pacific + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert datetime.fromisoformat(job["youtube"]["next_attempt_at"]) == reset.astimezone(UTC)
    assert emulator.state.completed() == []

    # The quota resets: no sooner than its time (moved here to now) the sweep uploads it.
    emulator.state.quota_reason = None
    postgres.query(
        "UPDATE youtube_uploads SET not_before = now(), updated_at = now() - interval '1 hour'"
        " WHERE job_id = %s",
        (job_id,),
    )
    job = upload_reaches(linked, job_id, "uploaded")
    assert job["youtube"]["attempts"] == 2
    assert job["youtube"]["error"] is None
    (session,) = emulator.state.completed()
    assert job["youtube"]["video_id"] == session.video["id"]


def test_a_revoked_channel_fails_the_upload_and_says_to_reconnect(
    linked: Stack, emulator: YouTubeEmulator
) -> None:
    emulator.state.refresh_token = "1//a-new-grant"  # noqa: S105  the old one is revoked
    job_id = submit(linked)
    job = upload_reaches(linked, job_id, "failed")
    assert job["status"] == "completed"  # the video itself is there
    assert "reconnect the channel" in job["youtube"]["error"]
    assert job["youtube"]["attempts"] == 1  # not retried: it cannot succeed
    assert emulator.state.completed() == []
