"""Every HTTP endpoint behind one bearer token (``KPI_WEB_TOKEN``): /metrics, /kpis, /decisions
and Faust's own pages alike. Settings refuse a non-loopback bind without a token.

The header is read as the bytes that arrived: a value that is not UTF-8 is refused like any other
malformed one (decoding it would turn a client's mistake into a server error)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from aiohttp import web

SCHEME = b"bearer"  # matched in any case (RFC 7235)
REFUSAL_HEADERS = {"WWW-Authenticate": 'Bearer realm="kpi-monitor"'}


def presented_token(raw_headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The token of the request's one ``Authorization: Bearer <token>`` header, or None if there
    is none, or several, or the scheme is another one. One or more spaces follow the scheme."""
    values = [value for name, value in raw_headers if name.lower() == b"authorization"]
    if len(values) != 1:  # several would leave it to each hop which one counts
        return None
    scheme, space, rest = values[0].partition(b" ")
    if not space or scheme.lower() != SCHEME:
        return None
    return rest.lstrip(b" ") or None


def bearer_token_required(token: str):
    expected = token.encode()

    @web.middleware
    async def require_token(request: web.Request, handler):
        given = presented_token(request.raw_headers)
        if given is None or not hmac.compare_digest(given, expected):
            return web.json_response(
                {"error": "a bearer token is required (KPI_WEB_TOKEN)"},
                status=401,
                headers=REFUSAL_HEADERS,
            )
        return await handler(request)

    return require_token
