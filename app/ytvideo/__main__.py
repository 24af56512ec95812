"""Entry points: ``python -m ytvideo COMMAND``.

api, worker: the services. healthcheck, worker-healthcheck: Docker's HEALTHCHECKs.
probe: the render tools a worker here would use. migrate [--check]
[--allow-incompatible]: the schema migrations. user NAME [--rate-limit N]:
create a user or set its password (read from standard input).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import urllib.error
import urllib.request

from .config import ConfigError, Settings


def run_api(settings: Settings, _: argparse.Namespace) -> int:
    import uvicorn

    from .api import create_app

    try:
        app = create_app(settings)
    except ConfigError as exc:
        print(f"ytvideo: configuration error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level="info",
        timeout_graceful_shutdown=10,
    )
    return 0


def run_worker(settings: Settings, _: argparse.Namespace) -> int:
    from .render.pipeline import PipelineError
    from .worker import make_worker_app

    app = make_worker_app(settings)
    # The render tools (device, a trial encode, the voice) before consuming: a worker
    # whose ffmpeg is broken takes no job, rather than failing every one.
    try:
        app.conf.ytvideo_worker.tools()
    except PipelineError as exc:
        print(f"ytvideo worker: not consuming, the render tools are broken: {exc}", file=sys.stderr)
        return 3
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


def healthcheck(settings: Settings, _: argparse.Namespace) -> int:
    """For Docker's HEALTHCHECK: 0 when GET /health/live answers 200.

    Liveness, not /health: a PostgreSQL blip must not mark every API container
    unhealthy at once (the deploy and nginx read /health for readiness)."""
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::") else settings.api_host  # noqa: S104
    url = f"http://{host}:{settings.api_port}/health/live"
    try:
        with urllib.request.urlopen(url, timeout=settings.check_timeout_seconds + 2) as resp:  # noqa: S310  fixed http URL
            print(resp.read().decode())
            return 0
    except urllib.error.HTTPError as exc:
        print(f"{url} answered {exc.code}: {exc.read().decode(errors='replace')}")
    except OSError as exc:
        print(f"{url} did not answer: {exc}")
    return 1


def worker_healthcheck(settings: Settings, _: argparse.Namespace) -> int:
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


def probe(settings: Settings, _: argparse.Namespace) -> int:
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


def migrate(settings: Settings, args: argparse.Namespace) -> int:
    """Apply the pending migrations, or with --check only say what is pending (JSON).

    Exit 0: done, or nothing incompatible pending; 3: an incompatible migration
    is pending (--check) or was refused; 1: the database could not be reached."""
    from . import migrate as migrations
    from .db import Database, DatabaseError

    db = Database(settings.database_url, settings.check_timeout_seconds)
    try:
        if not args.check:
            applied = migrations.apply(db, allow_incompatible=args.allow_incompatible)
            print(json.dumps({"applied_now": applied}))
        state = migrations.status(db)
    except migrations.MigrationError as exc:
        print(f"ytvideo migrate: {exc}", file=sys.stderr)
        return 3
    except DatabaseError as exc:
        print(f"ytvideo migrate: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(state.as_dict()))
    return 3 if state.incompatible else 0


def user(settings: Settings, args: argparse.Namespace) -> int:
    """Create the user NAME, or set its password; the password is read from stdin."""
    from . import migrate as migrations
    from .db import Database, DatabaseError

    password = sys.stdin.readline().rstrip("\n")
    if len(password) < 12:
        print("ytvideo user: the password (on standard input) needs 12 characters", file=sys.stderr)
        return 2
    db = Database(settings.database_url, settings.check_timeout_seconds)
    try:
        migrations.apply(db)
        print(
            json.dumps(
                {"user": args.name, "result": db.ensure_user(args.name, password, args.rate_limit)}
            )
        )
    except (DatabaseError, migrations.MigrationError) as exc:
        print(f"ytvideo user: {exc}", file=sys.stderr)
        return 1
    return 0


COMMANDS = {
    "api": run_api,
    "migrate": migrate,
    "user": user,
    "worker": run_worker,
    "healthcheck": healthcheck,
    "worker-healthcheck": worker_healthcheck,
    "probe": probe,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ytvideo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in sorted(COMMANDS):
        sub = commands.add_parser(name, help=(COMMANDS[name].__doc__ or "").split("\n")[0])
        if name == "migrate":
            sub.add_argument(
                "--check", action="store_true", help="say what is pending, apply nothing"
            )
            sub.add_argument("--allow-incompatible", action="store_true")
        if name == "user":
            sub.add_argument("name", type=str.lower)
            sub.add_argument("--rate-limit", type=int, default=None, help="requests a minute")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"ytvideo: configuration error: {exc}", file=sys.stderr)
        return 2
    return COMMANDS[args.command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
