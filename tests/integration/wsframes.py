"""A raw WebSocket client over a socket (RFC 6455), for the cases a well-behaved
client library will not produce: unmasked frames, reserved bits, bad fragmentation,
invalid UTF-8, bad close codes."""
import base64
import hashlib
import os
import socket
import struct
import time

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode, payload=b"", fin=True, mask=True, rsv=0, length=None):
    """A client frame; `length` overrides the encoded payload length."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_frame(code=None, reason=b"", **kw):
    payload = b"" if code is None else struct.pack("!H", code) + reason
    return frame(CLOSE, payload, **kw)


class RawWebSocket:
    def __init__(self, port, path="/ws/echo", extra=b"", early=b""):
        """Connects and completes the handshake; `early` is sent in the same write as
        the handshake request."""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                          b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                          b"Sec-WebSocket-Key: " + key + b"\r\n" + extra + b"\r\n" + early)
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, "closed during the handshake"
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.head = head.decode("latin-1")
        self.status = int(self.head.split(" ")[1])
        self.headers = {}
        for line in self.head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        if self.status == 101:
            expected = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
            assert self.headers["sec-websocket-accept"] == expected
        self.closed = False

    def send(self, *frames):
        self.sock.sendall(b"".join(frames))

    def recv_frame(self, timeout=5.0):
        """(opcode, payload, fin), or None once the server closed the TCP connection."""
        end = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                b0, b1 = self.buf[0], self.buf[1]
                assert not b1 & 0x80, "server frames are never masked"
                n, at = b1 & 0x7F, 2
                if n == 126 and len(self.buf) >= 4:
                    n, at = struct.unpack("!H", self.buf[2:4])[0], 4
                elif n == 127 and len(self.buf) >= 10:
                    n, at = struct.unpack("!Q", self.buf[2:10])[0], 10
                if (n < 126 or at > 2) and len(self.buf) >= at + n:
                    payload, self.buf = self.buf[at:at + n], self.buf[at + n:]
                    return b0 & 0x0F, payload, bool(b0 & 0x80)
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError("no frame from the server in time")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
                return None
            self.buf += chunk

    def expect_close(self, code, timeout=5.0):
        """Reads until the server's close frame; checks its code and that the TCP
        connection is closed after it."""
        while True:
            f = self.recv_frame(timeout)
            assert f is not None, "connection closed without a close frame"
            if f[0] == CLOSE:
                got = struct.unpack("!H", f[1][:2])[0] if len(f[1]) >= 2 else None
                assert got == code, (got, f[1])
                try:
                    self.send(close_frame(code))  # a well-behaved client answers
                except OSError:
                    pass  # the server already dropped a connection that broke the rules
                break
        assert self.recv_frame(timeout) is None  # then the server closes the connection
        return f[1][2:]

    def close(self):
        self.sock.close()
