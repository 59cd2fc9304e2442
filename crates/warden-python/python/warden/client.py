"""A thin client for a remote ``warden serve``: the same ``decide`` as ``Engine``.

Standard library only (``http.client``), one keep-alive connection per thread, so a client is
shared across threads like an engine.
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
import threading
import urllib.parse
from typing import Any, Optional

from ._warden import DecideError, Decision, RequestError, WardenError

_FIELD = re.compile(r"field `([^`]+)`")


class Client:
    """Decides requests with a running ``warden serve`` at ``url`` (``http://host:port`` or
    ``https://...``), sending ``api_key`` as ``X-API-Key`` when given (the key's policy
    decides; without one, the daemon's anonymous policy).

    Errors: a request the daemon refuses as malformed raises ``RequestError`` (``field`` names
    the field), an unreachable daemon or a server error ``DecideError`` (treat it as deny),
    other refusals (a missing or revoked key, a rate limit) ``WardenError`` with ``status`` and
    ``code``.
    """

    def __init__(
        self,
        url: str,
        api_key: Optional[str] = None,
        *,
        timeout: float = 10.0,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url: expected http://HOST:PORT or https://HOST:PORT")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._base = parts.path.rstrip("/")
        self._timeout = timeout
        self._ssl = ssl_context
        self._headers = {"content-type": "application/json", "accept": "application/json"}
        if api_key is not None:
            self._headers["x-api-key"] = api_key
        self._local = threading.local()
        self.url = url

    def __repr__(self) -> str:
        # Never the key.
        return f"Client(url={self.url!r})"

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._https:
                conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=self._ssl
                )
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            self._local.conn = conn
        return conn

    def _post(self, path: str, body: bytes) -> tuple:
        # One retry on a fresh connection: the daemon may have closed an idle keep-alive one.
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request("POST", self._base + path, body=body, headers=self._headers)
                response = conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                self._local.conn = None
                if attempt == 1:
                    raise DecideError(f"warden serve at {self.url} unreachable: {e}") from None
        raise DecideError(f"warden serve at {self.url} unreachable")  # not reached

    def decide(self, request: Any) -> Decision:
        """Decides one request (a dict, or its JSON text) with the daemon."""
        if isinstance(request, (str, bytes, bytearray)):
            body = request.encode() if isinstance(request, str) else bytes(request)
        else:
            try:
                body = json.dumps(request, allow_nan=False).encode()
            except (TypeError, ValueError) as e:
                err = RequestError(f"the request is not JSON: {e}")
                err.field = None
                raise err from None
        status, payload = self._post("/v1/decide", body)
        try:
            answer = json.loads(payload)
        except ValueError:
            answer = None
        if status == 200 and isinstance(answer, dict):
            return Decision.from_dict(answer)
        error = answer.get("error") if isinstance(answer, dict) else None
        code = error.get("code", "") if isinstance(error, dict) else ""
        message = error.get("message", "") if isinstance(error, dict) else ""
        if status in (400, 413, 422):
            err = RequestError(message or f"request refused (HTTP {status})")
            match = _FIELD.search(message)
            err.field = match.group(1) if match else None
        elif status >= 500 or status == 200:
            err = DecideError(message or f"warden serve answered HTTP {status}")
        else:
            err = WardenError(message or f"warden serve answered HTTP {status}")
        err.status = status
        err.code = code
        raise err

    def close(self) -> None:
        """Closes this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
