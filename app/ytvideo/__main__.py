"""Entry points: ``python -m ytvideo api|worker|healthcheck|worker-healthcheck|probe``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import urllib.error
import urllib.request

from .config import ConfigError, Settings


def run_api(settings: Settings) -> int:
    import uvicorn

    from .api import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level="info",
        timeout_graceful_shutdown=10,
    )
    return 0


def run_worker(settings: Settings) -> int:
    from .worker import make_worker_app

    app = make_worker_app(settings)
    app.worker_main(
        [
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "--loglevel=INFO",
            "--without-mingle",
            "--without-gossip",
            f"--hostname=ytvideo-{settings.queue_name}-{os.getpid()}@%h",
            f"--queues={settings.queue_name}",
        ]
    )
    return 0


def healthcheck(settings: Settings) -> int:
    """For Docker's HEALTHCHECK: 0 when GET /health answers 200."""
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::") else settings.api_host  # noqa: S104
    url = f"http://{host}:{settings.api_port}/health"
    try:
        with urllib.request.urlopen(url, timeout=settings.check_timeout_seconds + 2) as resp:  # noqa: S310  fixed http URL
            print(resp.read().decode())
            return 0
    except urllib.error.HTTPError as exc:
        print(f"{url} answered {exc.code}: {exc.read().decode(errors='replace')}")
    except OSError as exc:
        print(f"{url} did not answer: {exc}")
    return 1


def worker_healthcheck(settings: Settings) -> int:
    """For a worker container's HEALTHCHECK: 0 when what a render needs answers.

    The worker serves no HTTP, and its solo pool does not answer Celery's
    control commands while it renders, so `celery inspect ping` would call a
    busy worker unhealthy. This runs the checks of GET /health (PostgreSQL,
    Redis, free disk on MEDIA_DIR) from the worker's own container instead.
    """
    from . import health
    from .db import Database

    status, body = health.health_report(
        settings, Database(settings.database_url, settings.check_timeout_seconds)
    )
    print(json.dumps(body))
    return 0 if status == 200 else 1


def probe(settings: Settings) -> int:
    """Print what a worker here would use: device, encoder, narration."""
    from .render.pipeline import PipelineError, RenderTools

    try:
        tools = RenderTools.detect(settings)
    except PipelineError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "device": str(tools.device),
                "encoder": tools.encoder.name,
                "encoder_options": tools.encoder.options,
                "narration": tools.narrator.name,
            }
        )
    )
    return 0


COMMANDS = {
    "api": run_api,
    "worker": run_worker,
    "healthcheck": healthcheck,
    "worker-healthcheck": worker_healthcheck,
    "probe": probe,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ytvideo", description=__doc__)
    parser.add_argument("command", choices=sorted(COMMANDS))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"ytvideo: configuration error: {exc}", file=sys.stderr)
        return 2
    return COMMANDS[args.command](settings)


if __name__ == "__main__":
    sys.exit(main())
