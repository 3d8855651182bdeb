"""Outbound HTTP through `wasi:http/outgoing-handler`.

The host checks every request against the plugin's allowed hosts and fills
in secret placeholders (`secrets.placeholder(name)`) only where the manifest
binds them. There are no sockets: this is the only way out.
"""

import json as _json
from urllib.parse import urlsplit

from componentize_py_types import Err
from wit_world.imports import outgoing_handler
from wit_world.imports import wasi_http_types as h

from .errors import AuthError, PermanentError, RateLimited, TransientError

_METHODS = {
    "GET": h.Method_Get,
    "HEAD": h.Method_Head,
    "POST": h.Method_Post,
    "PUT": h.Method_Put,
    "DELETE": h.Method_Delete,
    "PATCH": h.Method_Patch,
    "OPTIONS": h.Method_Options,
}


class Response:
    """Status, lower-case headers and the whole body."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        """The first header called `name` (case-insensitive), or None."""
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        try:
            return _json.loads(self.body)
        except ValueError as e:
            raise PermanentError(f"response is not JSON: {e}") from None

    def raise_for_status(self):
        """Self for a status below 400, else the typed error the status means:
        429 rate-limited (Retry-After), 401/403 auth, 408/5xx transient,
        other 4xx permanent."""
        s = self.status
        if s < 400:
            return self
        msg = f"HTTP {s}: {self.text()[:300]}"
        if s == 429:
            try:
                wait = int(self.header("retry-after") or "1") * 1000
            except ValueError:
                wait = 1000
            raise RateLimited(msg, wait)
        if s in (401, 403):
            raise AuthError(msg)
        if s == 408 or s >= 500:
            raise TransientError(msg)
        raise PermanentError(msg)


def request(method, url, headers=None, body=b"", json=None, timeout_ms=None):
    """Send one request and read the whole response.

    `json` (any JSON value) sets the body and `content-type`. Network
    failures and refusals by the host raise `TransientError` or
    `PermanentError` with the host's reason."""
    try:
        return _send(method, url, headers, body, json, timeout_ms)
    except Err as e:
        raise TransientError(f"http: {e.value}") from None


def _send(method, url, headers, body, json, timeout_ms):
    headers = list((headers or {}).items()) if isinstance(headers, dict) else list(headers or [])
    if json is not None:
        body = _json.dumps(json).encode()
        headers.append(("content-type", "application/json"))
    if isinstance(body, str):
        body = body.encode()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PermanentError(f"not an http(s) URL: {url!r}")
    fields = h.Fields.from_list([(k.lower(), v.encode()) for k, v in headers])
    req = h.OutgoingRequest(fields)
    m = _METHODS.get(method.upper())
    req.set_method(m() if m else h.Method_Other(method.upper()))
    req.set_scheme(h.Scheme_Https() if parts.scheme == "https" else h.Scheme_Http())
    req.set_authority(parts.netloc)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    req.set_path_with_query(path)
    options = None
    if timeout_ms is not None:
        options = h.RequestOptions()
        options.set_first_byte_timeout(int(timeout_ms) * 1_000_000)
        options.set_between_bytes_timeout(int(timeout_ms) * 1_000_000)
    out_body = req.body()
    try:
        future = outgoing_handler.handle(req, options)
    except Err as e:
        raise PermanentError(f"request refused: {e.value}") from None
    if body:
        stream = out_body.write()
        for i in range(0, len(body), 4096):
            stream.blocking_write_and_flush(body[i : i + 4096])
        stream.__exit__(None, None, None)
    h.OutgoingBody.finish(out_body, None)
    pollable = future.subscribe()
    pollable.block()
    result = future.get()
    if result is None:
        raise TransientError("response not ready")
    inner = result.value
    if isinstance(inner, Err):
        raise TransientError(f"request failed: {inner.value}")
    resp = inner.value if hasattr(inner, "value") else inner
    status = resp.status()
    resp_headers = [(k, v.decode("utf-8", "replace")) for k, v in resp.headers().entries()]
    incoming = resp.consume()
    stream = incoming.stream()
    chunks = []
    while True:
        try:
            chunk = stream.blocking_read(65536)
        except Err:
            break
        chunks.append(chunk)
    return Response(status, resp_headers, b"".join(chunks))


def get(url, **kw):
    return request("GET", url, **kw)


def post(url, **kw):
    return request("POST", url, **kw)
