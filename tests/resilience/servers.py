"""Misbehaving HTTP/1.1 upstreams on raw sockets, each in a thread, counting what they receive.

Hypercorn (tests/upstream_app.py) is a well-behaved server; these are not: one resets the
connection in the middle of its response, one closes an idle keep-alive connection just as the
proxy reuses it (the stale-connection race, made deterministic).
"""

from __future__ import annotations

import socket
import struct
import threading
from typing import Literal

Mode = Literal["reset-mid-response", "close-on-reuse"]

_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"


class RawUpstream:
    """`reset-mid-response`: on every other connection, reads a request, writes half a response head
    and resets the connection (SO_LINGER 0). `close-on-reuse`: answers the first request of each
    connection with keep-alive, then closes the connection unanswered when a second request arrives."""

    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        self.requests = 0
        self.methods: dict[str, int] = {}
        self.broken = 0
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(256)
        self.address = "%s:%d" % self._sock.getsockname()
        self._connections = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                n = self._connections
                self._connections += 1
            threading.Thread(target=self._serve, args=(conn, n), daemon=True).start()

    def _read_request(self, conn: socket.socket, buf: bytearray) -> str | None:
        """One request (head plus content-length body); its method, or None at EOF."""
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            buf += chunk
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            rest += chunk
        buf[:] = rest[length:]
        method = head.split(b" ", 1)[0].decode()
        with self._lock:
            self.requests += 1
            self.methods[method] = self.methods.get(method, 0) + 1
        return method

    def _serve(self, conn: socket.socket, n: int) -> None:
        buf = bytearray()
        try:
            served = 0
            while self._read_request(conn, buf) is not None:
                if self.mode == "reset-mid-response" and n % 2 == 0:
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-le")
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self._count_broken()
                    return
                if self.mode == "close-on-reuse" and served == 1:
                    self._count_broken()
                    return
                conn.sendall(_OK)
                served += 1
        except OSError:
            pass
        finally:
            conn.close()

    def _count_broken(self) -> None:
        with self._lock:
            self.broken += 1
