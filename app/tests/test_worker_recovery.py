"""Failures are recorded and counted; a worker killed mid-job loses nothing.

These use a second stack (queue ``cloud``) whose narration goes to the local
ElevenLabs emulator, which a test can make fail or hold open.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ytvideo_emulator import SpeechEmulator
from ytvideo_services import PostgresServer, Stack, ffprobe, metric_value, wait_for

SCRIPT = "A cloud voice reads this. It costs a little money."


def submit(stack: Stack) -> str:
    response = stack.generate(title="Cloud", script=SCRIPT, resolution="192x108", duration=2)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_cloud_narration_is_used_and_costed(cloud_stack: Stack, speech_api: SpeechEmulator) -> None:
    cloud_stack.start_worker()
    job = cloud_stack.wait_finished(submit(cloud_stack))
    assert job["status"] == "completed", f"{job}\n{cloud_stack.logs()}"
    assert job["narration_provider"] == "elevenlabs"
    (request,) = speech_api.state.requests
    assert request["body"]["text"] == f"Cloud. {SCRIPT}"
    breakdown = job["cost_breakdown"]
    assert breakdown["narration_characters"] == len(f"Cloud. {SCRIPT}")
    assert breakdown["narration_dollars"] == round(len(f"Cloud. {SCRIPT}") / 1000 * 0.30, 6)
    assert job["cost_dollars"] > breakdown["narration_dollars"]  # plus compute


def test_a_failing_provider_fails_the_job_with_its_reason(
    cloud_stack: Stack, speech_api: SpeechEmulator
) -> None:
    speech_api.state.fail_status = 503
    cloud_stack.start_worker()
    before = cloud_stack.metrics()
    job = cloud_stack.wait_finished(submit(cloud_stack))
    assert job["status"] == "failed"
    assert job["failure"]["stage"] == "narration"
    assert "elevenlabs" in job["failure"]["reason"]
    assert "HTTP 503" in job["failure"]["reason"]
    assert job["output_path"] is None
    assert list((cloud_stack.base / "media").glob(f"*{job['id']}*")) == []
    after = cloud_stack.metrics()
    stage = {"stage": "narration"}
    assert (
        metric_value(after, "video_processing_failures_total", **stage)
        == metric_value(before, "video_processing_failures_total", **stage) + 1
    )


def test_a_worker_killed_mid_job_leaves_it_retryable(
    cloud_stack: Stack, speech_api: SpeechEmulator, postgres: PostgresServer
) -> None:
    speech_api.state.hold = threading.Event()  # the first narration request hangs
    first = cloud_stack.start_worker()
    job_id = submit(cloud_stack)
    assert speech_api.state.received.wait(120), cloud_stack.logs()
    status, attempts = postgres.query(
        "SELECT status, attempts FROM video_jobs WHERE id = %s", (job_id,)
    )[0]
    assert (status, attempts) == ("running", 1)

    first.kill()  # SIGKILL mid-render: no cleanup, no ack
    speech_api.state.hold.set()
    assert cloud_stack.client.get(f"/api/videos/{job_id}").json()["status"] == "running"

    cloud_stack.start_worker()  # its reaper finds the stale job and queues it again
    job = cloud_stack.wait_finished(job_id)
    assert job["status"] == "completed", f"{job}\n{cloud_stack.logs()}"
    assert job["attempts"] == 2
    assert len(speech_api.state.requests) == 2
    info = ffprobe(Path(job["output_path"]))
    assert {s["codec_type"] for s in info["streams"]} == {"video", "audio"}
    assert list((cloud_stack.base / "media").glob(".*partial*")) == []


def test_a_job_whose_workers_keep_dying_fails_as_worker_lost(
    cloud_stack: Stack, speech_api: SpeechEmulator, postgres: PostgresServer
) -> None:
    """After JOB_MAX_ATTEMPTS claims the reaper gives up and says why."""
    speech_api.state.hold = threading.Event()
    job_id = submit(cloud_stack)
    # Before the job is stale: any stack's reaper (the session's too) may fail it.
    before = cloud_stack.metrics()
    postgres.query(  # as if two workers had already died on it
        "UPDATE video_jobs SET status = 'running', attempts = 3, worker = 'gone:1',"
        " heartbeat_at = now() - interval '1 hour' WHERE id = %s",
        (job_id,),
    )
    cloud_stack.start_worker()
    job = wait_for(
        "job failed as worker_lost",
        lambda: (
            (d := cloud_stack.client.get(f"/api/videos/{job_id}").json())["status"] == "failed"
            and d
        ),
        60,
        cloud_stack.logs,
    )
    assert job["failure"]["stage"] == "worker_lost"
    assert "3 attempts" in job["failure"]["reason"]
    after = cloud_stack.metrics()
    lost = {"stage": "worker_lost"}
    assert metric_value(after, "video_processing_failures_total", **lost) == (
        metric_value(before, "video_processing_failures_total", **lost) + 1
    )
