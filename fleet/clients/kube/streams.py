"""Long-lived streaming answers (watches): `WatchStream`, one open response read line by line.

Does not: reconnect or resume (fleet.cluster.watch owns that).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from fleet.clients.kube import answers, transport
from fleet.core import errors


class WatchStream:
    """One open streaming response: `status`, `lines()` for a 2xx, `error()` for the Status of another.

    Transport failures and read timeouts (a half-open connection) raise `errors.Unreachable` with a
    message that carries no URL or credential.
    """

    def __init__(
        self,
        client: transport.Transport,
        path: str,
        *,
        what: str,
        params: Mapping[str, str],
        read_timeout: float,
    ) -> None:
        self._client = client
        self._path = path
        self._what = what
        self._params = dict(params)
        self._read_timeout = read_timeout
        self._response: aiohttp.ClientResponse | None = None
        self.status = 0

    async def __aenter__(self) -> WatchStream:
        client = self._client
        http = await client._open()
        await client._bucket.take()
        client.stats.requests += 1
        client.stats.by_method["GET"] = client.stats.by_method.get("GET", 0) + 1
        try:
            self._response = await http.stream(
                self._path,
                params=self._params,
                headers={"Accept": "application/json"},
                read_timeout=self._read_timeout,
            )
        except transport.TRANSPORT_ERRORS as e:
            raise errors.Unreachable(f"{self._what}: {transport.transport_problem(e)}") from None
        self.status = self._response.status
        return self

    async def __aexit__(self, *exc: Any) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.close()  # the connection goes with it: a watch is never read to its end

    async def lines(self) -> AsyncIterator[bytes]:
        """The non-empty lines of the body as they arrive."""
        assert self._response is not None
        cap = self._client.settings.max_answer_bytes
        buffer = b""
        try:
            async for chunk in self._response.content.iter_any():
                buffer += chunk
                while True:
                    line, sep, rest = buffer.partition(b"\n")
                    if not sep:
                        break
                    buffer = rest
                    if line.strip():
                        yield line
                if len(buffer) > cap:
                    raise answers.BadAnswer(
                        f"{self._what}: a watch event is larger than {cap} bytes; refused"
                    )
        except transport.TRANSPORT_ERRORS as e:
            raise errors.Unreachable(f"{self._what}: {transport.transport_problem(e)}") from None
        if buffer.strip():
            yield buffer

    async def error(self) -> tuple[str, str]:
        """(message, reason) of a non-2xx answer's Status body."""
        assert self._response is not None
        cap = self._client.settings.max_answer_bytes
        raw = b""
        try:
            async for chunk in self._response.content.iter_any():
                raw += chunk
                if len(raw) > cap:
                    raw = b""
                    break
        except transport.TRANSPORT_ERRORS:
            raw = b""
        _, body = answers.parse(raw)
        return answers.status_message(body, self.status)
