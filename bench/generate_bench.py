#!/usr/bin/env python3
"""Load benchmark of POST /api/videos/generate (ops guide §5.4: ab -n 1000 -c 50).

    python bench/generate_bench.py [-n 1000] [-c 50] [--json]

Starts PostgreSQL, Redis and the API (the app tests' real services, on free
loopback ports), logs in as a user with no practical rate limit, and runs
ApacheBench against ``generate?dry_run=true``: the request is authenticated,
validated and costed, and nothing is stored or queued, so the figure is the
API's own cost per request. Side by side, in the same run, the same load on
GET /health/live (no database, no validation) gives the baseline; the ratio
of the two is what the endpoint's work costs. Prints requests per second and
p50/p95/p99 for both, and fails if any answer is not 2xx.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "app"))
sys.path.insert(0, str(ROOT / "app" / "tests"))

from ytvideo.db import Database  # noqa: E402
from ytvideo_services import PostgresServer, RedisServer, Stack  # noqa: E402

BODY = {
    "title": "Load benchmark",
    "script": "A short script. Validated, costed, and not stored.",
    "resolution": "1280x720",
    "duration": 30,
}
USER, PASSWORD = "bench", "bench-password-0123"  # noqa: S105  a throwaway account


def ab(url: str, requests: int, concurrency: int, work: Path, token: str, body: Path | None):
    """One ApacheBench run: requests per second, p50/p95/p99 in ms, non-2xx count."""
    percentiles = work / "percentiles.csv"
    command = ["ab", "-q", "-n", str(requests), "-c", str(concurrency), "-e", str(percentiles)]
    command += ["-H", f"Authorization: Bearer {token}"]
    if body is not None:
        command += ["-p", str(body), "-T", "application/json"]
    done = subprocess.run([*command, url], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"ab failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
    rps = float(re.search(r"Requests per second:\s+([\d.]+)", done.stdout).group(1))
    failed = int(re.search(r"Failed requests:\s+(\d+)", done.stdout).group(1))
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", done.stdout)
    with percentiles.open() as handle:
        rows = {int(float(r[0])): float(r[1]) for r in list(csv.reader(handle))[1:]}
    return {
        "requests_per_second": rps,
        "p50_ms": rows[50],
        "p95_ms": rows[95],
        "p99_ms": rows[99],
        "failed": failed,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--requests", type=int, default=1000)
    parser.add_argument("-c", "--concurrency", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    if not shutil.which("ab"):
        raise SystemExit("ab is missing: apt-get install apache2-utils")

    with tempfile.TemporaryDirectory(prefix="generate-bench-") as tmp:
        work = Path(tmp)
        work.chmod(0o711)  # PostgreSQL runs as its own user under it
        postgres = PostgresServer(work / "pg")
        redis_server = RedisServer(work / "redis")
        postgres.start()
        redis_server.start()
        stack = Stack(
            "bench",
            work / "stack",
            {"DATABASE_URL": postgres.url, "REDIS_URL": redis_server.url},
        )
        try:
            stack.start_api(log_in=False)
            Database(postgres.url).ensure_user(USER, PASSWORD, rate_limit=10**9)
            token = stack.login(USER, PASSWORD)
            body = work / "body.json"
            body.write_text(json.dumps(BODY))
            base = str(stack.client.base_url).rstrip("/")
            figures = {
                "requests": args.requests,
                "concurrency": args.concurrency,
                "health_live": ab(
                    f"{base}/health/live", args.requests, args.concurrency, work, token, None
                ),
                "generate_dry_run": ab(
                    f"{base}/api/videos/generate?dry_run=true",
                    args.requests,
                    args.concurrency,
                    work,
                    token,
                    body,
                ),
            }
            stored = postgres.query("SELECT count(*) FROM video_jobs")[0][0]
        finally:
            stack.stop()
            redis_server.stop()
            postgres.stop()

    live, gen = figures["health_live"], figures["generate_dry_run"]
    figures["generate_to_live_rps_ratio"] = gen["requests_per_second"] / live["requests_per_second"]
    print(f"generate benchmark: ab -n {args.requests} -c {args.concurrency}, one API process")
    for name, f in (("GET /health/live", live), ("POST generate?dry_run", gen)):
        print(
            f"  {name:22}: {f['requests_per_second']:8.1f} req/s   p50 {f['p50_ms']:6.1f} ms"
            f"   p95 {f['p95_ms']:6.1f} ms   p99 {f['p99_ms']:6.1f} ms"
        )
    print(f"  generate / live       : {figures['generate_to_live_rps_ratio']:8.2f} (requests/s)")
    if args.json:
        print(json.dumps(figures))
    bad = {k: v for k, v in (("live", live), ("generate", gen)) if v["failed"] or v["non_2xx"]}
    if bad or stored:
        print(
            f"generate_bench: failed or non-2xx answers {bad}, jobs stored {stored}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
