#!/usr/bin/python3
"""Writes the connection fuzzer's seed corpus (fuzz/corpus/connection/): HTTP/1.1
requests (first byte even) and HTTP/2 frame sequences (first byte odd; the target puts
the client preface in front). Run again after changing it; the seeds are committed."""
from pathlib import Path

import hpack
from hyperframe.frame import (ContinuationFrame, DataFrame, HeadersFrame, PingFrame,
                              PriorityFrame, RstStreamFrame, SettingsFrame, WindowUpdateFrame)

out = Path(__file__).resolve().parent / "corpus" / "connection"
out.mkdir(parents=True, exist_ok=True)

http1 = {
    "get": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "pipelined": b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
    "post-length": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    "post-chunked": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n",
    "expect": b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    "http10": b"GET /trailers HTTP/1.0\r\n\r\n",
    "h2c-upgrade": b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                   b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    "websocket": b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                 b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                 b"\x81\x85\x01\x02\x03\x04ig`hn\x88\x80\x00\x00\x00\x00",
}
for name, data in http1.items():
    (out / f"http1-{name}").write_bytes(b"\x00" + data)


def headers(enc, sid, path="/", method="GET", end=True, extra=()):
    h = HeadersFrame(sid)
    h.data = enc.encode([(":method", method), (":scheme", "http"), (":path", path),
                         (":authority", "x")] + list(extra))
    h.flags.add("END_HEADERS")
    if end:
        h.flags.add("END_STREAM")
    return h


def data(sid, payload, end=False):
    d = DataFrame(sid)
    d.data = payload
    if end:
        d.flags.add("END_STREAM")
    return d


def h2(*frames):
    return b"\x01" + SettingsFrame(0).serialize() + b"".join(f.serialize() for f in frames)


enc = hpack.Encoder()
ping = PingFrame(0)
ping.opaque_data = b"12345678"
upd = WindowUpdateFrame(1)
upd.window_increment = 1000
rst = RstStreamFrame(3)
rst.error_code = 8
prio = PriorityFrame(5)
prio.depends_on = 1
cont_head = HeadersFrame(7)
cont_head.data = enc.encode([(":method", "GET"), (":scheme", "http")])
cont_head.flags.add("END_STREAM")
cont = ContinuationFrame(7)
cont.data = enc.encode([(":path", "/"), (":authority", "x")])
cont.flags.add("END_HEADERS")
seeds = {
    "get": h2(headers(enc, 1)),
    "post": h2(headers(enc, 1, "/echo", "POST", end=False), data(1, b"hello"), data(1, b"", True)),
    "streams": h2(headers(enc, 1, "/trailers"), headers(enc, 3, "/a"), rst, headers(enc, 5), prio),
    "window-ping": h2(ping, upd, headers(enc, 1, "/x?y=1")),
    "continuation": h2(cont_head, cont),
    "connect": h2(headers(hpack.Encoder(), 1, "/chat", "CONNECT", end=False,
                          extra=[(":protocol", "websocket"), ("sec-websocket-version", "13")]),
                  data(1, b"\x81\x85\x01\x02\x03\x04ig`hn")),
}
for name, data_ in seeds.items():
    (out / f"http2-{name}").write_bytes(data_)
print(f"{len(http1) + len(seeds)} seeds in {out}")
