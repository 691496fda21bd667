"""A tiny webhook receiver that prints the alerts it gets (Alertmanager or Grafana webhook format).

Used by the docker-compose demo profile as the default alert target, and handy when wiring a
real receiver: `kpi-monitor alert-sink --port 8080`.
"""

from __future__ import annotations

import json
import sys

from aiohttp import web


async def _receive(request: web.Request) -> web.Response:
    body = await request.json()
    for alert in body.get("alerts", []):
        labels = alert.get("labels", {})
        print(
            json.dumps(
                {
                    "status": alert.get("status"),
                    "alertname": labels.get("alertname"),
                    "campaign": labels.get("campaign"),
                    "severity": labels.get("severity"),
                    "summary": alert.get("annotations", {}).get("summary"),
                }
            ),
            flush=True,
        )
    return web.Response(text="ok")


def run(host: str, port: int) -> int:
    app = web.Application()
    app.router.add_post("/alerts", _receive)
    print(f"alert sink listening on http://{host}:{port}/alerts", file=sys.stderr, flush=True)
    web.run_app(app, host=host, port=port, print=None)
    return 0
