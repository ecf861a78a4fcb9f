"""What keeps one request from hurting `metricls serve`: the body-size and Host-header
middleware, and the checks of a POST /tag body (UTF-8, JSON, size, shape) made before pydantic
builds one error per bad item. They run in a worker thread; each refusal is one HTTPException
whose detail names the field.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Sequence
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metricls.errors import InputError
from metricls.validation import describe

MAX_VALUES = 100_000  # JSON values in one body (json.loads builds as many in ~20 ms)
MAX_DEPTH = 32  # levels of nesting in one body (a valid one has 3)
NOT_AN_OBJECT = 'body: expected a JSON object such as {"texts": ["..."], "k": 5}'
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{},:]')  # strings and punctuation


# ---- a /tag body --------------------------------------------------------------------------------
def check_content_type(value: str | None) -> None:
    """415 unless the body is JSON (no Content-Type is read as JSON, as FastAPI does)."""
    media = (value or "application/json").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise HTTPException(415, f"body: expected Content-Type application/json, got "
                                 f"{value[:100]}")


def parse_body(body: bytes, fields: Sequence[str], max_batch: int, max_values: int) -> Any:
    """The body's JSON value. One whose values may outnumber `max_values` is first scanned, and
    refused at its first problem, before json.loads builds them."""
    if not body:
        raise HTTPException(422, f"{NOT_AN_OBJECT}, got nothing")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HTTPException(400, f"body: not valid UTF-8 (byte 0x{body[exc.start]:02x} at "
                                 f"position {exc.start})") from None
    if 1 + text.count(",") + text.count("[") + text.count("{") > max_values:  # a bound on values
        _scan(text, fields, max_batch, max_values)
    try:
        return json.loads(text, parse_int=_int)
    except json.JSONDecodeError as exc:
        raise HTTPException(400, f"body: not valid JSON ({exc.msg} at character {exc.pos})"
                            ) from None
    except RecursionError:
        _scan(text, fields, max_batch, max_values)  # names the field nested too deep
        raise HTTPException(422, f"body: nested more than {MAX_DEPTH} levels deep") from None


def check_shape(data: Any, fields: Sequence[str], max_batch: int) -> None:
    """Refuse, at the first bad one, what pydantic would report item by item: a body that is
    not an object, unknown keys, more than `max_batch` texts or vectors, items of a wrong type."""
    if not isinstance(data, dict):
        raise HTTPException(422, f"{NOT_AN_OBJECT}, got {short(data)}")
    for key in data:
        if key not in fields:
            raise HTTPException(422, _unknown_field(key, fields))
    for field in ("texts", "vectors"):
        items = data.get(field)
        if not isinstance(items, list):
            continue  # pydantic says so in one message
        if len(items) > max_batch:
            raise HTTPException(413, too_many(field, str(len(items)), max_batch))
        for i, item in enumerate(items):
            if field == "texts":
                _check_text(item, f"texts[{i}]")
            else:
                _check_row(item, f"vectors[{i}]")


def too_many(field: str, count: str, max_batch: int) -> str:
    return (f"{field}: {count} items, more than the limit of {max_batch} per request "
            "(max_batch); split the request")


def short(value: Any) -> str:
    """`describe`, without writing out a long list or object."""
    if isinstance(value, (list, dict)) and len(value) > 8:
        return f"{type(value).__name__} of {len(value)} items"
    return describe(value)


def _int(digits: str) -> int | float:
    """A JSON integer; one too long for int() (4300 digits) is read as a float (inf)."""
    try:
        return int(digits)
    except ValueError:
        return float(digits)


def _scan(text: str, fields: Sequence[str], max_batch: int, max_values: int) -> None:
    """Refuse a big body at its first problem: not an object, an unknown top-level key, more
    than `max_batch` items, nesting deeper than MAX_DEPTH, or more than `max_values` values.
    Reads strings and punctuation, not numbers; returns if it finds nothing wrong."""
    depth, values, items, key, last = 0, 0, 0, "body", ""
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            if depth == 0 and token == "[":
                raise HTTPException(422, f"{NOT_AN_OBJECT}, got a list")
            depth, values = depth + 1, values + 1
            if depth > MAX_DEPTH:
                raise HTTPException(422, f"{key}: nested more than {MAX_DEPTH} levels deep")
        elif token in ("]", "}"):
            depth -= 1
        elif token == ",":
            values, items = values + 1, items + (depth == 2)
            if items >= max_batch and key in ("texts", "vectors"):
                raise HTTPException(413, too_many(key, f"at least {items + 1}", max_batch))
        elif token == ":" and depth == 1:
            key, items = _field(last, fields), 0
        last = token
        if values > max_values:
            raise HTTPException(413, f"{key}: more than {max_values} JSON values, the limit "
                                     "per request")


def _field(token: str, fields: Sequence[str]) -> str:
    """A top-level key read by `_scan`; 422 for an unknown one."""
    try:
        key = json.loads(token)
    except ValueError:
        key = token
    if key not in fields:
        raise HTTPException(422, _unknown_field(str(key), fields))
    return key


def _check_text(text: Any, where: str) -> None:
    if not isinstance(text, str):
        raise HTTPException(422, f"{where}: input should be a valid string, got {short(text)}")
    try:
        text.encode()
    except UnicodeEncodeError as exc:  # "\ud800" in JSON: tokenizers refuse it
        raise HTTPException(422, f"{where}: expected Unicode text, got a lone surrogate at "
                                 f"character {exc.start}") from None


def _check_row(row: Any, where: str) -> None:
    if not isinstance(row, list):
        raise HTTPException(422, f"{where}: input should be a valid list, got {short(row)}")
    for j, value in enumerate(row):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HTTPException(422, f"{where}[{j}]: input should be a valid number, got "
                                     f"{short(value)}")


def _unknown_field(key: str, fields: Sequence[str]) -> str:
    key = key if len(key) <= 40 else key[:37] + "..."
    near = difflib.get_close_matches(key, fields, n=1)
    hint = f"did you mean '{near[0]}'?" if near else f"expected one of {list(fields)}"
    return f"{key}: unknown field; {hint}"


# ---- middleware ---------------------------------------------------------------------------------
class BodyLimit:
    """ASGI middleware: 413 for a request body over `max_bytes`, before the app reads any of it.

    A declared Content-Length is checked first; a chunked body is counted as it arrives. The
    body is then handed to the app in one piece.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send, int(declared))
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._too_large(scope, receive, send, None)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body: Message | None = {"type": "http.request", "body": b"".join(chunks),
                                "more_body": False}

        async def replay() -> Message:
            nonlocal body
            if body is None:
                return await receive()
            message, body = body, None
            return message

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send,
                         declared: int | None) -> None:
        size = f"{declared} bytes, " if declared is not None else ""
        detail = (f"request body: {size}more than the limit of {self.max_bytes} bytes "
                  "(max_body_bytes)")
        response = JSONResponse({"detail": detail}, status_code=413,
                                headers={"Connection": "close"})
        await response(scope, receive, send)


class LoopbackHostOnly:
    """ASGI middleware: 400 for a request whose Host header does not name loopback (a web page
    whose DNS name rebinds to 127.0.0.1 would otherwise reach a server bound there)."""

    def __init__(self, app: ASGIApp, bound_to: str) -> None:
        self.app = app
        self.bound_to = bound_to

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if not is_loopback(_host_name(header)):
                got = repr(header[:100]) if header else "none"
                response = JSONResponse({"detail": f"Host header: expected localhost or a "
                                                   f"loopback address (the server is bound to "
                                                   f"{self.bound_to}), got {got}"},
                                        status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _host_name(header: str) -> str:
    """The name or address of a Host header, without its port or IPv6 brackets."""
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


# ---- addresses ----------------------------------------------------------------------------------
def check_address(host: Any, port: Any) -> None:
    """InputError naming --host or --port unless `host` is an IP address or a host name and
    `port` an int from 1 to 65535."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InputError(f"--port: expected 1..65535, got {port}")
    if not isinstance(host, str) or not (_is_ip(host) or _HOST_NAME.fullmatch(host)):
        raise InputError(f"--host: expected an IP address or a host name (127.0.0.1, 0.0.0.0, "
                         f"localhost), got {describe(host)}")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"  # of a host name
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?")


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an IP address, no port) is localhost or a loopback address."""
    return host.lower() == "localhost" or (_is_ip(host) and ipaddress.ip_address(host).is_loopback)
