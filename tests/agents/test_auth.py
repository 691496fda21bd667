"""The bearer-token middleware in a real aiohttp server on 127.0.0.1, spoken to over a raw socket:
HTTP clients encode header values, so only raw bytes can send what a broken client sends."""

from __future__ import annotations

import asyncio
import base64

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agents.auth import bearer_token_required

TOKEN = "s3cret-Token_0123456789"
OK, REFUSED = 200, 401


@pytest.fixture
async def server():
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application(middlewares=[bearer_token_required(TOKEN)])
    app.router.add_get("/metrics", hello)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


async def get(
    server: TestServer, header_lines: bytes
) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    """GET /metrics with ``header_lines`` (raw, CRLF-terminated) added; status, headers, body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        + header_lines
        + b"\r\n"
    )
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers: dict[bytes, list[bytes]] = {}
    for name, _, value in (line.partition(b":") for line in lines):
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(status_line.split()[1]), headers, body


def authorization(value: bytes) -> bytes:
    return b"Authorization: " + value + b"\r\n"


RIGHT = TOKEN.encode()


def basic(user_and_password: bytes) -> bytes:
    return authorization(b"Basic " + base64.b64encode(user_and_password))


CASES = [
    ("missing", b"", REFUSED),
    ("empty", authorization(b""), REFUSED),
    ("scheme only", authorization(b"Bearer"), REFUSED),
    ("scheme and spaces only", authorization(b"Bearer   "), REFUSED),
    ("wrong scheme", authorization(b"Digest " + RIGHT), REFUSED),
    ("basic with the raw token", authorization(b"Basic " + RIGHT), REFUSED),
    ("no space after the scheme", authorization(b"Bearer" + RIGHT), REFUSED),
    ("tab after the scheme", authorization(b"Bearer\t" + RIGHT), REFUSED),
    ("lower-case scheme", authorization(b"bearer " + RIGHT), OK),
    ("upper-case scheme", authorization(b"BEARER " + RIGHT), OK),
    ("mixed-case scheme", authorization(b"bEaReR " + RIGHT), OK),
    ("several spaces after the scheme", authorization(b"Bearer   " + RIGHT), OK),
    ("non-UTF-8 token", authorization(b"Bearer \xff\xfe" + RIGHT), REFUSED),
    ("non-UTF-8 scheme", authorization(b"B\xe9arer " + RIGHT), REFUSED),
    ("wrong token", authorization(b"Bearer " + RIGHT[:-1] + b"X"), REFUSED),
    ("a prefix of the token", authorization(b"Bearer " + RIGHT[:-1]), REFUSED),
    ("right token", authorization(b"Bearer " + RIGHT), OK),
    ("token with trailing junk", authorization(b"Bearer " + RIGHT + b" junk"), REFUSED),
    ("token with a trailing character", authorization(b"Bearer " + RIGHT + b"x"), REFUSED),
    ("token twice", authorization(b"Bearer " + RIGHT) * 2, REFUSED),
    # A browser's: Basic credentials whose password is the token, whatever the user name.
    ("basic, token as password", basic(b"ops:" + RIGHT), OK),
    ("basic, empty user name", basic(b":" + RIGHT), OK),
    ("basic, lower-case scheme", authorization(b"basic " + base64.b64encode(b"u:" + RIGHT)), OK),
    ("basic, wrong password", basic(b"ops:" + RIGHT[:-1] + b"X"), REFUSED),
    ("basic, token as user name", basic(RIGHT + b":"), REFUSED),
    ("basic, no colon", basic(RIGHT), REFUSED),
    ("basic, not base64", authorization(b"Basic %%%" + RIGHT), REFUSED),
    ("basic, twice", basic(b"ops:" + RIGHT) * 2, REFUSED),
]


@pytest.mark.parametrize(
    "header_lines, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_every_class_of_authorization_header(server, header_lines, expected):
    status, headers, body = await get(server, header_lines)
    assert status == expected, body
    if expected == OK:
        assert body == b"hello"
    else:
        # Scripts read the first challenge; a browser picks Basic and asks for the password.
        assert headers[b"www-authenticate"] == [
            b'Bearer realm="kpi-monitor"',
            b'Basic realm="kpi-monitor", charset="UTF-8"',
        ]
        assert b"KPI_WEB_TOKEN" in body and b"Traceback" not in body
