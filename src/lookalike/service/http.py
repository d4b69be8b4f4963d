"""How ``serve`` speaks HTTP: uvicorn's h11 protocol with a deadline for request headers.

uvicorn times out an idle keep-alive connection only once a response was sent, and any byte
received cancels that timer: a client that connects and sends nothing, or its headers a byte
every few seconds, would hold a connection (and a file descriptor) for ever. Here every
request's headers must be complete within :data:`lookalike.config.HTTP_HEADER_SECONDS` of
the connection, or of the previous response; a body may take as long as it needs (a large
upload on a slow link).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from lookalike import config


class HeaderDeadlineProtocol(H11Protocol):
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_request():
            self._disarm()  # the headers are in: the request runs
        elif self._deadline is None:
            self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._disarm()  # the keep-alive timer watches the idle connection now

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _in_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(config.HTTP_HEADER_SECONDS, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self._in_request() and not self.transport.is_closing():
            self.transport.close()


def uvicorn_options() -> dict[str, Any]:
    """What ``serve`` passes to ``uvicorn.run`` about connections."""
    return {
        "http": HeaderDeadlineProtocol,
        "timeout_keep_alive": config.HTTP_KEEP_ALIVE_SECONDS,
        "h11_max_incomplete_event_size": config.HTTP_MAX_HEADER_BYTES,
    }
