"""YouTube upload against an emulator of the OAuth token endpoint and resumable upload.

The emulator is a real HTTP server on a loopback port (tests/ytvideo_youtube_emulator.py);
nothing of ytvideo.youtube is mocked. The video is a real MP4 made by ffmpeg.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from ytvideo.config import ConfigError
from ytvideo.youtube import (
    QuotaExceeded,
    TokenCipher,
    TokenCipherError,
    YouTubeAuthError,
    YouTubeClient,
    YouTubeSettings,
    YouTubeUploadError,
    upload_video,
    video_metadata,
)
from ytvideo_youtube_emulator import GRANULARITY, YouTubeEmulator, YouTubeState

CHUNK = GRANULARITY  # 256 KiB, the smallest chunk the protocol allows
REFRESH_TOKEN = YouTubeState().refresh_token  # what the emulator accepts unless a test changes it


@pytest.fixture(scope="module")
def mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3 s H.264/AAC MP4 of about 1.1 MB: four full 256 KiB chunks and a partial one."""
    out = tmp_path_factory.mktemp("youtube") / "finished.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"]
        + ["-f", "lavfi", "-i", "sine", "-t", "3", "-vf", "noise=alls=40:allf=t+u"]
        + ["-c:v", "libx264", "-preset", "ultrafast", "-b:v", "3M", "-maxrate", "3M"]
        + ["-bufsize", "1M", "-c:a", "aac", "-shortest", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert out.stat().st_size > 3 * CHUNK, "the test video must span more than three chunks"
    return out


@pytest.fixture(scope="module")
def server() -> Iterator[YouTubeEmulator]:
    emulator = YouTubeEmulator()
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def youtube(server: YouTubeEmulator) -> Iterator[YouTubeEmulator]:
    server.state.reset()
    yield server
    server.state.reset()


@pytest.fixture
def settings(youtube: YouTubeEmulator) -> YouTubeSettings:
    return YouTubeSettings.from_env(
        {
            "YOUTUBE_CLIENT_ID": youtube.state.client_id,
            "YOUTUBE_CLIENT_SECRET": youtube.state.client_secret,
            "YOUTUBE_TOKEN_URL": youtube.token_url,
            "YOUTUBE_API_BASE_URL": youtube.url,
            "YOUTUBE_CHUNK_BYTES": str(CHUNK),
            "YOUTUBE_TIMEOUT_SECONDS": "10",
            "YOUTUBE_MAX_RETRIES": "3",
            "YOUTUBE_RETRY_BASE_SECONDS": "0.01",
        }
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload(mp4: Path, settings: YouTubeSettings, client: YouTubeClient | None = None) -> str:
    description = "Made by ffmpeg for the test"
    return upload_video(
        mp4,
        "Emulated upload",
        description,
        "private",
        refresh_token=REFRESH_TOKEN,
        settings=settings,
        client=client,
    )


def the_upload(youtube: YouTubeEmulator, mp4: Path, video_id: str) -> None:
    """Exactly one session, complete, holding the file's bytes, under the returned id."""
    assert len(youtube.state.sessions) == 1
    (session,) = youtube.state.sessions.values()
    assert session.video is not None
    assert session.video["id"] == video_id
    assert session.video["kind"] == "youtube#video"
    assert session.total == mp4.stat().st_size
    assert sha256(bytes(session.data)) == sha256(mp4.read_bytes())


# --- uploads ------------------------------------------------------------------


def test_upload_sends_the_file_in_chunks_and_returns_the_video_id(
    mp4: Path, settings: YouTubeSettings, youtube: YouTubeEmulator
) -> None:
    video_id = upload(mp4, settings)
    the_upload(youtube, mp4, video_id)
    size = mp4.stat().st_size
    chunks = [e for e in youtube.state.log if e["kind"] == "chunk"]
    assert [e["status"] for e in chunks] == [308] * (len(chunks) - 1) + [200]
    assert len(chunks) == -(-size // CHUNK) > 3
    assert chunks[0]["range"] == f"bytes 0-{CHUNK - 1}/{size}"
    assert chunks[-1]["range"].endswith(f"-{size - 1}/{size}")
    (session,) = youtube.state.sessions.values()
    assert session.metadata["snippet"]["title"] == "Emulated upload"
    assert session.metadata["status"]["privacyStatus"] == "private"
    assert session.content_type == "video/mp4"
    assert youtube.state.count("token") == 1


def test_upload_survives_a_connection_dropped_mid_chunk(
    mp4: Path, settings: YouTubeSettings, youtube: YouTubeEmulator
) -> None:
    youtube.state.drop_chunk_at = 2  # the server keeps the first 100000 bytes it read
    video_id = upload(mp4, settings)
    the_upload(youtube, mp4, video_id)
    log = youtube.state.log
    dropped = next(i for i, e in enumerate(log) if e.get("dropped"))
    assert log[dropped]["dropped"] == youtube.state.drop_after
    # After the drop the client asked where the upload stands, then resumed from there,
    # mid-way through what it had sent (the emulator rejects any other start).
    assert log[dropped + 1]["kind"] == "query"
    assert log[dropped + 1]["status"] == 308
    resumed = CHUNK + youtube.state.drop_after
    assert log[dropped + 2]["range"].startswith(f"bytes {resumed}-")
    assert youtube.state.count("start") == 1


def test_upload_resumes_after_a_server_error(
    mp4: Path, settings: YouTubeSettings, youtube: YouTubeEmulator
) -> None:
    youtube.state.fail_chunks = 2  # the first two chunk PUTs answer 503
    video_id = upload(mp4, settings)
    the_upload(youtube, mp4, video_id)
    assert youtube.state.count("chunk", 503) == 2
    assert youtube.state.count("query") == 2


def test_upload_gives_up_after_bounded_retries(
    mp4: Path, settings: YouTubeSettings, youtube: YouTubeEmulator
) -> None:
    youtube.state.fail_chunks = 1000
    with pytest.raises(YouTubeUploadError, match="4 attempts in a row failed.*HTTP 503"):
        upload(mp4, settings)
    assert youtube.state.count("chunk", 503) == settings.max_retries + 1
    assert youtube.state.completed() == []


@pytest.mark.parametrize("reason", ["quotaExceeded", "uploadLimitExceeded"])
def test_quota_refusal_raises_quota_exceeded_and_is_not_retried(
    mp4: Path, settings: YouTubeSettings, youtube: YouTubeEmulator, reason: str
) -> None:
    youtube.state.quota_reason = reason
    with pytest.raises(QuotaExceeded, match=reason) as caught:
        upload(mp4, settings)
    assert caught.value.reason == reason
    assert youtube.state.count("start") == 1  # one try, answered 403; no second session
    assert youtube.state.count("start", 403) == 1
    assert youtube.state.sessions == {}
    assert youtube.state.chunk_puts == 0


def test_an_access_token_expiring_mid_upload_is_refreshed_once(
    mp4: Path, settings: YouTubeSettings, youtube: YouTubeEmulator
) -> None:
    youtube.state.expire_at_chunk = 3
    video_id = upload(mp4, settings)
    the_upload(youtube, mp4, video_id)
    assert youtube.state.count("chunk", 401) == 1
    assert youtube.state.count("token", 200) == 2


def test_a_client_reuses_its_access_token_and_refreshes_it_after_a_401(
    mp4: Path, settings: YouTubeSettings, youtube: YouTubeEmulator
) -> None:
    with YouTubeClient(settings, REFRESH_TOKEN) as client:
        first = upload(mp4, settings, client)
        assert youtube.state.count("token") == 1
        youtube.state.expire_tokens()  # the cached token is no longer valid
        second = upload(mp4, settings, client)
    assert first != second
    assert len(youtube.state.completed()) == 2
    assert youtube.state.count("start", 401) == 1
    assert youtube.state.count("token") == 2


def test_an_access_token_close_to_expiry_is_not_reused(
    settings: YouTubeSettings, youtube: YouTubeEmulator
) -> None:
    with YouTubeClient(settings, REFRESH_TOKEN) as client:
        assert client.access_token() == client.access_token()
        assert youtube.state.count("token") == 1
        youtube.state.token_lifetime = 30  # inside the 60 s margin
        client.access_token(force=True)
        client.access_token()
    assert youtube.state.count("token") == 3


def test_a_token_refused_after_refresh_raises_auth_error(
    mp4: Path, settings: YouTubeSettings, youtube: YouTubeEmulator
) -> None:
    youtube.state.reject_tokens = True
    with pytest.raises(YouTubeAuthError, match="freshly refreshed"):
        upload(mp4, settings)
    assert youtube.state.count("token") == 2  # the first token and exactly one refresh
    assert youtube.state.count("start", 401) == 2
    assert youtube.state.sessions == {}


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [("refresh_token", "1//revoked", "invalid_grant"), ("client_secret", "nope", "invalid_client")],
)
def test_refused_credentials_raise_auth_error_before_any_upload(
    mp4: Path,
    settings: YouTubeSettings,
    youtube: YouTubeEmulator,
    field: str,
    value: str,
    error: str,
) -> None:
    setattr(youtube.state, field, value)  # the emulator now expects something else
    with pytest.raises(YouTubeAuthError, match=error):
        upload(mp4, settings)
    assert youtube.state.count("token") == 1
    assert youtube.state.count("start") == 0


def test_metadata_youtube_would_refuse_is_refused_before_any_request(
    mp4: Path, settings: YouTubeSettings, youtube: YouTubeEmulator
) -> None:
    with pytest.raises(ValueError, match="privacy 'secret'"):
        upload_video(mp4, "t", "d", "secret", refresh_token=REFRESH_TOKEN, settings=settings)
    with pytest.raises(ValueError, match="1 to 100 characters"):
        video_metadata("x" * 101, "", "private")
    with pytest.raises(ValueError, match="< or >"):
        video_metadata("a <b>", "", "private")
    assert youtube.state.log == []


def test_chunk_size_must_be_a_multiple_of_256_kib() -> None:
    with pytest.raises(ConfigError, match="YOUTUBE_CHUNK_BYTES=300000"):
        YouTubeSettings.from_env({"YOUTUBE_CHUNK_BYTES": "300000"})
    assert YouTubeSettings.from_env({}).chunk_bytes == 32 * CHUNK


# --- refresh tokens at rest ---------------------------------------------------

KEY_1 = bytes(range(32))
KEY_2 = bytes(range(100, 132))
TOKEN = "1//0gExampleRefreshToken-abcdefghijklmnopqrstuvwxyz"  # noqa: S105  test data


def test_cipher_round_trips_and_never_repeats_a_ciphertext() -> None:
    cipher = TokenCipher({1: KEY_1}, current=1)
    first, second = cipher.encrypt(TOKEN), cipher.encrypt(TOKEN)
    assert first != second  # a fresh nonce each time
    assert TOKEN not in first
    assert TOKEN.encode() not in base64.urlsafe_b64decode(first)
    assert cipher.decrypt(first) == TOKEN == cipher.decrypt(second)
    assert cipher.key_id_of(first) == 1


@pytest.mark.parametrize("position", [1, 5, 20, -1])  # key id, nonce, ciphertext, tag
def test_cipher_rejects_a_tampered_token(position: int) -> None:
    cipher = TokenCipher({1: KEY_1, 2: KEY_2}, current=1)
    raw = bytearray(base64.urlsafe_b64decode(cipher.encrypt(TOKEN)))
    raw[position] ^= 0x03  # key id 1 becomes 2, which is configured: still refused
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode()
    with pytest.raises(TokenCipherError, match="does not authenticate"):
        cipher.decrypt(tampered)


def test_cipher_rejects_a_wrong_key_and_an_unknown_key_id() -> None:
    stored = TokenCipher({1: KEY_1}, current=1).encrypt(TOKEN)
    with pytest.raises(TokenCipherError, match="does not authenticate under key id 1"):
        TokenCipher({1: KEY_2}, current=1).decrypt(stored)
    with pytest.raises(TokenCipherError, match="key id 1, which is not configured"):
        TokenCipher({2: KEY_2}, current=2).decrypt(stored)
    with pytest.raises(TokenCipherError, match="not base64|too short"):
        TokenCipher({1: KEY_1}, current=1).decrypt("not a token")


def test_cipher_binds_a_token_to_its_context() -> None:
    cipher = TokenCipher({1: KEY_1}, current=1)
    stored = cipher.encrypt(TOKEN, context=b"channel:42")
    assert cipher.decrypt(stored, context=b"channel:42") == TOKEN
    with pytest.raises(TokenCipherError):
        cipher.decrypt(stored, context=b"channel:43")


def test_cipher_rotates_keys_from_settings() -> None:
    old = TokenCipher.from_settings(YouTubeSettings(token_key=KEY_1.hex(), token_key_id=1))
    stored = old.encrypt(TOKEN)
    b64 = base64.b64encode(KEY_2).decode()
    new = TokenCipher.from_settings(
        YouTubeSettings(token_key=b64, token_key_id=2, token_old_keys=f"1:{KEY_1.hex()}")
    )
    assert new.decrypt(stored) == TOKEN
    assert new.needs_rotation(stored)
    rotated = new.rotate(stored)
    assert new.key_id_of(rotated) == 2
    assert not new.needs_rotation(rotated)
    assert TokenCipher({2: KEY_2}, current=2).decrypt(rotated) == TOKEN
    with pytest.raises(TokenCipherError):
        old.decrypt(rotated)


@pytest.mark.parametrize("key", ["", "abc", "00" * 31, base64.b64encode(os.urandom(16)).decode()])
def test_cipher_refuses_a_missing_or_short_key(key: str) -> None:
    with pytest.raises(TokenCipherError, match="YOUTUBE_TOKEN_KEY"):
        TokenCipher.from_settings(YouTubeSettings(token_key=key))
