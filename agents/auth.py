"""Every HTTP endpoint behind one bearer token (``KPI_WEB_TOKEN``): the live page, /metrics, /kpis,
/decisions and Faust's own pages alike. Settings refuse a non-loopback bind without a token.

A browser cannot send a bearer token when it opens a page, so the same token is also taken as the
password of HTTP Basic credentials (any user name): a refusal offers both schemes, the browser
asks for the password once, then sends it with every request of the page.

The header is read as the bytes that arrived: a value that is not UTF-8 is refused like any other
malformed one (decoding it would turn a client's mistake into a server error)."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable

from aiohttp import web
from multidict import CIMultiDict

SCHEME = b"bearer"  # matched in any case (RFC 7235)
BASIC = b"basic"
# Two challenges, one per header line (browsers read one per line): scripts use the first.
REFUSAL_HEADERS = CIMultiDict(
    [
        ("WWW-Authenticate", 'Bearer realm="kpi-monitor"'),
        ("WWW-Authenticate", 'Basic realm="kpi-monitor", charset="UTF-8"'),
    ]
)


def presented_token(raw_headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The token of the request's one ``Authorization: Bearer <token>`` header, or None if there
    is none, or several, or the scheme is another one. One or more spaces follow the scheme."""
    values = [value for name, value in raw_headers if name.lower() == b"authorization"]
    if len(values) != 1:  # several would leave it to each hop which one counts
        return None
    scheme, space, rest = values[0].partition(b" ")
    if not space:
        return None
    if scheme.lower() == BASIC:
        return basic_password(rest.lstrip(b" "))
    if scheme.lower() != SCHEME:
        return None
    return rest.lstrip(b" ") or None


def basic_password(credentials: bytes) -> bytes | None:
    """The password of Basic ``credentials`` (base64 of ``user:password``), or None if they are
    not that."""
    try:
        decoded = base64.b64decode(credentials, validate=True)
    except (binascii.Error, ValueError):
        return None
    _, colon, password = decoded.partition(b":")
    return password if colon and password else None


def bearer_token_required(token: str):
    expected = token.encode()

    @web.middleware
    async def require_token(request: web.Request, handler):
        given = presented_token(request.raw_headers)
        if given is None or not hmac.compare_digest(given, expected):
            return web.json_response(
                {
                    "error": "a bearer token is required (KPI_WEB_TOKEN); a browser: any user "
                    "name and the token as password"
                },
                status=401,
                headers=REFUSAL_HEADERS,
            )
        return await handler(request)

    return require_token
