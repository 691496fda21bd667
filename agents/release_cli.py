"""``kpi-monitor autopause release CAMPAIGN [--rule NAME] [--worker URL ...]``: an operator takes a
held campaign back. A hold (``max_cycles_per_day`` reached) lasts until the campaign's next
midnight; this ends it now. The worker that owns the campaign's partition releases it
(``POST /autopause/release``) and answers once the released tracks are written; the others answer
404. Each worker given is asked (default: this machine's, ``KPI_WEB_HOST:KPI_WEB_PORT``), with
``KPI_WEB_TOKEN`` as the bearer token.

Exit codes: 0 released on some worker; 1 no worker asked holds a hold of it; 2 a worker could not
be asked (unreachable, refused the token or the request).
"""

from __future__ import annotations

import sys
from typing import TextIO

import aiohttp
import orjson

from stream.settings import Settings

TIMEOUT_SECONDS = 10.0


def default_worker(settings: Settings) -> str:
    host = "127.0.0.1" if settings.web_host in ("0.0.0.0", "::") else settings.web_host
    return f"http://{host}:{settings.web_port}"


async def release(
    settings: Settings,
    campaign: str,
    rule: str | None,
    workers: list[str],
    *,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    params = {"campaign": campaign, **({"rule": rule} if rule else {})}
    headers = {"Authorization": f"Bearer {settings.web_token}"} if settings.web_token else {}
    released = failed = 0
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
        for worker in workers or [default_worker(settings)]:
            url = worker.rstrip("/") + "/autopause/release"
            try:
                async with session.post(url, params=params) as response:
                    body = await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                print(f"{worker}: not reached: {exc or type(exc).__name__}", file=err)
                failed += 1
                continue
            if status == 200:
                for each in orjson.loads(body).get("released", ()):
                    print(f"{worker}: released {campaign} rule {each['rule']}", file=out)
                    released += 1
            elif status == 404:
                print(f"{worker}: no hold of {campaign} here", file=out)
            else:
                text = body.decode("utf-8", "replace")[:300]
                print(f"{worker}: refused ({status}): {text}", file=err)
                failed += 1
    if released:
        return 0
    return 2 if failed else 1
