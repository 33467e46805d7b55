"""Oversized request heads get an answer: 431 (or 414 for the request line), not a dropped connection.

Twisted's HTTPChannel, which daphne serves HTTP with, limits a request's head: a line may be
at most 16384 bytes (LineReceiver.MAX_LENGTH), the request line and headers together
16384 bytes (totalHeadersSize), and there may be at most 500 headers (maxHeaders). Past the
line limit LineReceiver just closes the socket, so the client sees the connection drop with
no response at all (a 100 kB X-Request-ID did that); past the other two it writes a bare
"400 Bad Request" and closes at once, so a client still sending its head usually gets a reset
instead of reading it. HeaderLimitHTTPChannel keeps the limits and says what happened:
`431 Request Header Fields Too Large` (RFC 6585), or `414 URI Too Long` when the request line
itself is too long, with a short plain-text body and `Connection: close`. It then half-closes
(the response and a FIN go out) and reads and discards what the client still sends, for at
most LINGER_SECONDS and LINGER_MAX_BYTES, so the client reads the answer instead of a reset.

daphne builds its HTTPFactory inside Server.run() from the name `daphne.server.HTTPFactory`,
with no option for the protocol class, so install() points that one name at a subclass whose
connections use this channel. `manage.py serve` calls it before it starts daphne; nothing else
is changed (other twisted users, the test client and the ASGI app are not affected).
"""
from __future__ import annotations

from twisted.web import http

LINGER_SECONDS = 5.0
LINGER_MAX_BYTES = 1 << 20

_BODIES = {
    431: "Request Header Fields Too Large: a request's header lines may have at most {line} bytes "
         "each, {total} bytes in all, and there may be at most {count} headers.\n",
    414: "URI Too Long: the request line may have at most {line} bytes.\n",
}
_REASONS = {431: "Request Header Fields Too Large", 414: "URI Too Long"}


class HeaderLimitHTTPChannel(http.HTTPChannel):
    """HTTPChannel that answers 431/414 when a request's head is over its limits (see the module)."""

    _refused = False
    _refused_bytes = 0
    _linger_call = None

    def _refuse(self, status: int) -> None:
        if self._refused:
            return
        self._refused = True
        body = _BODIES[status].format(line=self.MAX_LENGTH, total=self.totalHeadersSize,
                                      count=self.maxHeaders).encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (status, _REASONS[status].encode(), len(body), body)
        )
        self.clearLineBuffer()  # the rest of the head, unparsed
        self.transport.loseWriteConnection()
        self._linger_call = self.callLater(LINGER_SECONDS, self._linger_end)

    def _linger_end(self) -> None:
        self._linger_call = None
        self.transport.abortConnection()

    def dataReceived(self, data):
        if self._refused:
            self._refused_bytes += len(data)
            if self._refused_bytes > LINGER_MAX_BYTES and self._linger_call is not None:
                self._linger_call.cancel()
                self._linger_end()
            return
        super().dataReceived(data)

    def lineLengthExceeded(self, line):
        # LineReceiver calls this only in line mode: the request line or a header line.
        self._refuse(414 if getattr(self, "_HTTPChannel__first_line", 0) else 431)

    def lineReceived(self, line):
        if self._refused:
            return
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self._refuse(431)
            return
        super().lineReceived(line)

    def headerReceived(self, line):
        if self._refused:
            return False
        if self._receivedHeaderCount >= self.maxHeaders:
            self._refuse(431)
            return False
        return super().headerReceived(line)

    def connectionLost(self, reason):
        if self._linger_call is not None and self._linger_call.active():
            self._linger_call.cancel()
        self._linger_call = None
        super().connectionLost(reason)


def _header_limit_channel_protocol(factory):
    """What twisted's _genericHTTPChannelProtocolFactory returns, with our channel inside."""
    return http._GenericHTTPChannelProtocol(HeaderLimitHTTPChannel())


def install() -> None:
    """Make daphne's Server build its HTTP connections with HeaderLimitHTTPChannel (idempotent)."""
    import daphne.server
    from daphne.http_protocol import HTTPFactory

    if getattr(daphne.server.HTTPFactory, "header_limits", False):
        return

    class HeaderLimitHTTPFactory(HTTPFactory):
        """daphne's HTTPFactory; each connection's channel is a HeaderLimitHTTPChannel."""

        header_limits = True
        protocol = _header_limit_channel_protocol

    daphne.server.HTTPFactory = HeaderLimitHTTPFactory
