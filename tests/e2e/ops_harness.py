"""Real Prometheus and Alertmanager (Debian packages) on 127.0.0.1, and a webhook receiver."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from agents.broker import free_port, stop_process


def binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(
        f"none of {names} on PATH: run scripts/install-ops-tools.sh (make test does)"
    )


class Webhook:
    """Collects the JSON bodies POSTed to it, with their arrival time."""

    def __init__(self) -> None:
        self.received: list[tuple[float, dict]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((time.time(), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self) -> list[tuple[float, dict]]:
        return [(at, alert) for at, body in list(self.received) for alert in body.get("alerts", [])]

    def stop(self) -> None:
        self.server.shutdown()


class Service:
    def __init__(self, args: list[str], log: Path) -> None:
        self._log = open(log, "wb")
        self.process = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop(self) -> None:
        stop_process(self.process, timeout=15)
        self._log.close()


def start_alertmanager(workdir: Path, webhook_url: str) -> tuple[Service, int]:
    port = free_port()
    config = {
        "route": {
            "receiver": "test",
            "group_by": ["alertname", "campaign"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {"name": "test", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}
        ],
    }
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config))
    service = Service(
        [
            binary("prometheus-alertmanager", "alertmanager"),
            f"--config.file={workdir / 'alertmanager.yml'}",
            f"--storage.path={workdir / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        workdir / "alertmanager.log",
    )
    wait_http(f"http://127.0.0.1:{port}/-/ready", 30)
    return service, port


def start_prometheus(
    workdir: Path, targets: list[str], rule_file: Path, alertmanager_port: int, token: str = ""
) -> tuple[Service, int]:
    port = free_port()
    job: dict = {"job_name": "kpi-monitor", "static_configs": [{"targets": targets}]}
    if token:  # as ops/prometheus/prometheus.yml: the workers' token from a file
        (workdir / "kpi-web-token").write_text(token)
        job["authorization"] = {
            "type": "Bearer",
            "credentials_file": str(workdir / "kpi-web-token"),
        }
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rule_file)],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]
        },
        "scrape_configs": [job],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    service = Service(
        [
            binary("prometheus"),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--rules.alert.resend-delay=1s",
            "--rules.alert.for-grace-period=1s",
        ],
        workdir / "prometheus.log",
    )
    wait_http(f"http://127.0.0.1:{port}/-/ready", 30)
    return service, port


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def query(port: int, expr: str) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:
        return json.loads(err.read())
