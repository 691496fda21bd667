"""Every HTTP endpoint behind one bearer token (``KPI_WEB_TOKEN``): /metrics, /kpis, /decisions
and Faust's own pages alike. Settings refuse a non-loopback bind without a token."""

from __future__ import annotations

import hmac

from aiohttp import web


def bearer_token_required(token: str):
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def require_token(request: web.Request, handler):
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return web.json_response(
                {"error": "a bearer token is required (KPI_WEB_TOKEN)"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="kpi-monitor"'},
            )
        return await handler(request)

    return require_token
