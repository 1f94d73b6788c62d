"""A header-read deadline for uvicorn's HTTP protocol, which has none of its own.

uvicorn closes idle keep-alive connections but waits forever for a request's headers, so a
client that sends them a byte at a time (slow loris) holds a connection, and a worker's
file descriptors, as long as it likes. This protocol gives each request's head
``header_timeout_s`` from its first byte (or from the connection's opening) and answers
408 and closes when it runs out. The body's deadline is the application's (``app.py``),
which reads it.
"""

from __future__ import annotations

_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
)


def protocol_class(header_timeout_s: float):
    """uvicorn's HTTP protocol (httptools where installed, else h11) with the deadline."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # httptools is optional for uvicorn
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base

    body = (
        b'{"error": "The request headers did not arrive within %g s; send them at once, or '
        b'start the server with a larger --header-timeout-s."}' % header_timeout_s
    )
    answer = _TIMEOUT + b"content-length: %d\r\n\r\n" % len(body) + body

    class HeaderDeadline(Base):
        _deadline = None
        _waiting_since_cycle = None

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
                self._arm()  # the first bytes of the next request's head
            super().data_received(data)
            if self._deadline is not None and self.cycle is not self._waiting_since_cycle:
                self._disarm()  # its headers are complete: a new request cycle began

        def connection_lost(self, exc):
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._waiting_since_cycle = self.cycle
            self._deadline = self.loop.call_later(header_timeout_s, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.transport.is_closing() or self.cycle is not self._waiting_since_cycle:
                return
            idle = self.cycle is None or self.cycle.response_complete
            if idle:
                self.transport.write(answer)
            self.transport.close()

    return HeaderDeadline
