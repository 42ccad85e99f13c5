"""Raw HTTP/2 frames over a socket (python3-hyperframe + python3-hpack), for the cases a
well-behaved client library will not produce."""
import socket
import time

import hpack
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame,
                              PingFrame, RstStreamFrame, SettingsFrame)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
REFUSED_STREAM = 7
STREAM_CLOSED, FRAME_SIZE_ERROR, CANCEL, ENHANCE_YOUR_CALM = 5, 6, 8, 11


class RawH2:
    def __init__(self, port, preface=True, rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf:  # before connecting, so the window the kernel offers stays small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", port))
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.buf = b""
        self.closed = False
        if preface:
            self.sock.sendall(PREFACE + SettingsFrame(0).serialize())

    def send(self, *frames):
        self.sock.sendall(b"".join(f.serialize() if hasattr(f, "serialize") else f for f in frames))

    def header_block(self, path="/", method="GET", extra=()):
        return self.encoder.encode([(":method", method), (":scheme", "http"), (":path", path),
                                    (":authority", "127.0.0.1")] + list(extra))

    def request(self, stream_id, path="/", method="GET", end_stream=True, extra=()):
        h = HeadersFrame(stream_id)
        h.data = self.header_block(path, method, extra)
        h.flags.add("END_HEADERS")
        if end_stream:
            h.flags.add("END_STREAM")
        return h

    def data(self, stream_id, payload, end_stream=False):
        d = DataFrame(stream_id)
        d.data = payload
        if end_stream:
            d.flags.add("END_STREAM")
        return d

    def ping(self, opaque=b"12345678"):
        p = PingFrame(0)
        p.opaque_data = opaque
        return p

    def frames(self, until, timeout=5.0):
        """Reads frames until `until(frame)` is true, EOF, or the timeout; returns them."""
        out = []
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            while len(self.buf) >= 9:
                f, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
                if len(self.buf) < 9 + length:
                    break
                f.parse_body(memoryview(self.buf[9:9 + length]))
                self.buf = self.buf[9 + length:]
                if isinstance(f, HeadersFrame):
                    f.decoded = self.decoder.decode(f.data)
                out.append(f)
                if until(f):
                    return out
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                self.closed = True
                return out
            if not chunk:
                self.closed = True
                return out
            self.buf += chunk
        return out

    def wait_closed(self, timeout=5.0):
        self.frames(lambda f: False, timeout)
        return self.closed

    def close(self):
        self.sock.close()


def goaways(frames):
    return [(f.last_stream_id, f.error_code) for f in frames if isinstance(f, GoAwayFrame)]


def status_of(frames, stream_id):
    for f in frames:
        if isinstance(f, HeadersFrame) and f.stream_id == stream_id:
            return int(dict(f.decoded)[":status"])
    return None


def body_of(frames, stream_id):
    return b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == stream_id)


def ends(stream_id):
    return lambda f: f.stream_id == stream_id and "END_STREAM" in f.flags
