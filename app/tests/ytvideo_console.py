"""The web console's test bench: a real nginx serving frontend/ and a headless Chromium.

nginx plays both production roles in one server: the frontend image's
(molecule/images/stack/frontend/nginx.conf: the static files with its security
headers, read from that file so the test runs under the CSP that ships) and
the host's (roles/nginx: ``/api/`` and ``/health`` proxied to the API). It
runs from a temporary directory on a free loopback port, in the foreground,
with its pid, logs and temporary files there; as root it runs as an
unprivileged system user, as in the image (uid 101).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import httpx
from ytvideo_services import REPO_DIR, _service_user, free_port, tail, wait_for

FRONTEND_DIR = REPO_DIR / "frontend"
FRONTEND_NGINX_CONF = REPO_DIR / "molecule/images/stack/frontend/nginx.conf"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
BROWSER_PACKAGES = (
    "apt-get install chromium chromium-driver; pip install -r app/requirements-test.txt"
)


def frontend_headers(conf: Path = FRONTEND_NGINX_CONF) -> list[str]:
    """The ``add_header`` directives of the frontend image's server, verbatim."""
    lines = [line.strip() for line in conf.read_text().splitlines()]
    headers = [line for line in lines if re.match(r"add_header\s", line)]
    if not any("Content-Security-Policy" in line for line in headers):
        raise AssertionError(f"{conf} has no Content-Security-Policy header any more")
    return headers


def missing_browser() -> str | None:
    """Why the browser cannot run here, or None."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium Python package")
    if missing:
        return (
            f"the console test needs a headless browser: missing {', '.join(missing)}. "
            f"Install it with `{BROWSER_PACKAGES}` (scripts/bootstrap.sh does)"
        )
    return None


class ConsoleServer:
    """nginx with the console's files and the API behind ``/api/``."""

    def __init__(self, api_port: int) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).is_file():
            raise RuntimeError(
                "nginx is missing: apt-get install nginx-light (as the frontend image)"
            )
        self.binary = binary
        self.api_port = api_port
        self.port = free_port()
        # Under /tmp, not pytest's 0700 basetemp: as root, nginx runs as another user.
        self.base = Path(tempfile.mkdtemp(prefix="ytvideo-nginx-"))
        self.base.chmod(0o711)
        self.site = self.base / "site"
        shutil.copytree(FRONTEND_DIR, self.site)  # as the image: COPY site/
        self.conf = self.base / "nginx.conf"
        self.error_log = self.base / "error.log"
        self.access_log = self.base / "access.log"
        self.account = _service_user()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        base, api = self.base, f"http://127.0.0.1:{self.api_port}"
        headers = "\n".join(f"            {line}" for line in frontend_headers())
        temp = "\n".join(
            f"    {kind}_temp_path {base}/{kind}-temp;"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        proxy = f"""proxy_pass {api};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header Connection "";
            proxy_request_buffering off;"""
        return f"""# The console test's nginx (ytvideo_console.py): frontend image + host routes.
worker_processes 1;
pid {base}/nginx.pid;
error_log {self.error_log} warn;
events {{
    worker_connections 64;
}}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {self.access_log};
    server_tokens off;
{temp}
    server {{
        listen 127.0.0.1:{self.port};
        server_name _;
        client_max_body_size 8m;
        location /api/ {{
            {proxy}
        }}
        location /health {{
            {proxy}
        }}
        location / {{
            root {self.site};
            index index.html;
{headers}
            add_header Cache-Control no-cache always;
            try_files $uri $uri/ /index.html;
        }}
    }}
}}
"""

    def _command(self, *extra: str) -> list[str]:
        return [
            self.binary,
            "-p",
            str(self.base),
            "-c",
            str(self.conf),
            "-e",
            str(self.error_log),
            *extra,
        ]

    def _as_account(self) -> dict[str, object]:
        if not self.account:
            return {}
        return {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}

    def logs(self) -> str:
        return "\n".join(
            [f"--- {self.conf.name} ---\n{self.conf.read_text()}", tail(self.error_log)]
        )

    def start(self) -> None:
        self.conf.write_text(self.config())
        if self.account:
            for path in [self.base, *self.base.rglob("*")]:
                os.chown(path, self.account.pw_uid, self.account.pw_gid)
        check = subprocess.run(
            self._command("-t"), capture_output=True, text=True, **self._as_account()
        )
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t refused the test config:\n{check.stderr}\n{self.logs()}")
        self.process = subprocess.Popen(
            self._command("-g", "daemon off;"),
            stdout=subprocess.DEVNULL,
            stderr=(self.base / "stderr.log").open("ab"),
            start_new_session=True,
            **self._as_account(),
        )

        def answers() -> bool:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode}")
            return httpx.get(f"{self.url}/health/live", timeout=2).status_code == 200

        wait_for("the console's nginx", answers, 30, self.logs)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGQUIT)  # graceful, as the image's STOPSIGNAL
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)
        shutil.rmtree(self.base, ignore_errors=True)


def start_browser(log_dir: Path, downloads: Path):  # noqa: ANN201  selenium is imported lazily
    """Headless Chromium driven by the system chromedriver (no Selenium Manager download).

    Files the page downloads land in ``downloads`` without a prompt.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespaces for the sandbox
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1400",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
            "download.directory_upgrade": True,
            "safebrowsing.enabled": False,
        },
    )
    service = Service(
        executable_path=str(CHROMEDRIVER), log_output=str(log_dir / "chromedriver.log")
    )
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_script_timeout(60)
    # Headless Chromium also needs to be told over CDP where downloads go.
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    return driver


__all__ = [
    "BROWSER_PACKAGES",
    "ConsoleServer",
    "FRONTEND_DIR",
    "frontend_headers",
    "missing_browser",
    "start_browser",
]
