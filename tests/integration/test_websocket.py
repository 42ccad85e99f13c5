"""WebSocket (RFC 6455 over HTTP/1.1, RFC 8441 over HTTP/2) with the ASGI message set:
python3-websockets for the normal paths, raw frames for the rules (the Autobahn
testsuite's categories: framing, ping/pong, reserved bits, opcodes, fragmentation,
UTF-8, close codes)."""
import re
import asyncio
import signal
import socket
import struct
import time

import pytest
import websockets
from hyperframe.frame import DataFrame, HeadersFrame, SettingsFrame

from conftest import wait_until
from h2frames import RawH2, ends, status_of
from wsframes import (BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, RawWebSocket, close_frame,
                      frame)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


# --- normal paths, with python3-websockets -----------------------------------------------

def test_echo_text_and_binary_with_a_subprotocol(server):
    async def main():
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws/echo",
                                      subprotocols=["x-other", "chat"]) as ws:
            assert ws.subprotocol == "chat"
            assert ws.response_headers["x-testapp"] == "websocket"
            await ws.send("héllo wörld")
            assert await ws.recv() == "héllo wörld"
            await ws.send(b"\x00\xff" * 300_000)  # 600 kB: extended lengths
            assert await ws.recv() == b"\x00\xff" * 300_000
            pong = await ws.ping(b"are you there")
            await asyncio.wait_for(pong, 5)
        return ws.close_code
    assert run(main()) == 1000


def test_scope_of_a_websocket(server):
    async def main():
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws/scope?room=1",
                                      subprotocols=["chat", "v2"]) as ws:
            return await ws.recv()
    assert run(main()) == "scheme=ws http_version=1.1 path=/ws/scope query=room=1 subprotocols=chat,v2,"


def test_app_closes_with_a_code_and_reason(server):
    async def main():
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws/close-after") as ws:
            with pytest.raises(websockets.ConnectionClosed) as e:
                await ws.recv()
            return e.value.rcvd.code, e.value.rcvd.reason
    assert run(main()) == (4000, "done here")


@pytest.mark.parametrize("path, status", [("/ws/deny", 403), ("/ws/throw", 500)])
def test_app_that_does_not_accept_denies_the_handshake(server, path, status):
    async def main():
        with pytest.raises(websockets.InvalidStatusCode) as e:
            await websockets.connect(f"ws://127.0.0.1:{server.port}{path}")
        return e.value.status_code
    assert run(main()) == status
    if status == 500:
        server.wait_log(re.escape("the websocket app failed on purpose"))  # worker lines reach the log within 100 ms


def test_message_over_ws_max_size_closes_with_1009(start_server):
    s = start_server("--ws-max-size", "1000")
    ws = RawWebSocket(s.port)
    ws.send(frame(TEXT, b"a" * 1000))
    assert ws.recv_frame() == (TEXT, b"a" * 1000, True)
    ws.send(frame(TEXT, b"b" * 600, fin=False), frame(CONTINUATION, b"b" * 600))
    ws.expect_close(1009)


def test_flood_to_a_slow_client_is_held_back(server):
    """Backpressure: the app's send() waits while the client does not read, so the
    worker never holds much of the 32 MiB it is sending. The client reads 1 MiB, then
    pauses (a slow reader, not a synchronisation)."""
    [worker] = server.workers()
    rss = lambda: int(open(f"/proc/{worker}/statm").read().split()[1]) * 4096
    before = rss()
    ws = RawWebSocket(server.port, "/ws/flood?mb=32")
    received, grown = 0, 0
    while (f := ws.recv_frame(10))[0] != CLOSE:
        received += len(f[1])
        if received % (1024 * 1024) == 0:
            grown = max(grown, rss() - before)
            time.sleep(0.02)
    assert received == 32 * 1024 * 1024
    assert grown < 8 * 1024 * 1024, grown


def test_client_sending_to_an_app_that_does_not_read_is_held_back(server):
    """Backpressure the other way: while the app does not receive(), the server reads
    nothing, so the client cannot push more than the socket buffers hold."""
    [worker] = server.workers()
    rss = lambda: int(open(f"/proc/{worker}/statm").read().split()[1]) * 4096
    before = rss()
    ws = RawWebSocket(server.port, "/ws/sleepy?ms=1500")
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    ws.sock.setblocking(False)
    message = frame(BINARY, b"u" * 65536)
    pushed = 0
    try:
        for _ in range(512):  # 32 MiB, if nothing held us back
            pushed += ws.sock.send(message[pushed % len(message):] if pushed % len(message) else message)
    except BlockingIOError:
        pass
    assert pushed < 16 * 1024 * 1024, pushed
    assert rss() - before < 8 * 1024 * 1024
    # Once the app reads, everything arrives: finish the partial frame, then "end".
    ws.sock.setblocking(True)
    ws.sock.settimeout(10)
    rest = (-pushed) % len(message)
    ws.sock.sendall(message[len(message) - rest:] + frame(TEXT, b"end"))
    frames_sent = (pushed + rest) // len(message)
    assert ws.recv_frame(10) == (TEXT, str(frames_sent * 65536).encode(), True)


# --- the server's own pings, and draining ------------------------------------------------

def test_client_that_never_answers_pings_is_dropped(start_server):
    s = start_server("--ws-ping-interval", "0.2", "--ws-ping-timeout", "0.3")
    ws = RawWebSocket(s.port)
    pings = 0
    while (f := ws.recv_frame(5)) is not None:
        assert f[0] == PING
        pings += 1
    assert pings == 1  # no pong within the timeout: dropped, no second ping
    s.wait_log(re.escape("no pong within 0.3s, closing"))  # worker lines reach the log within 100 ms


def test_client_that_answers_pings_stays(start_server):
    s = start_server("--ws-ping-interval", "0.2", "--ws-ping-timeout", "0.3")
    ws = RawWebSocket(s.port)
    for _ in range(4):
        opcode, payload, _ = ws.recv_frame(5)
        assert opcode == PING
        ws.send(frame(PONG, payload))
    ws.send(frame(TEXT, b"still here"))
    while (f := ws.recv_frame(5))[0] == PING:
        ws.send(frame(PONG, f[1]))
    assert f == (TEXT, b"still here", True)


def test_graceful_stop_closes_websockets_with_1001(start_server):
    s = start_server("-w", "1", "--graceful-timeout", "20")
    ws = RawWebSocket(s.port)
    ws.send(frame(TEXT, b"before"))
    assert ws.recv_frame() == (TEXT, b"before", True)
    s.signal(signal.SIGTERM)
    assert ws.expect_close(1001, timeout=10) == b"server shutting down"
    assert s.proc.wait(15) == 0


# --- raw frames: what a client must not send ---------------------------------------------

@pytest.mark.parametrize("bad, code", [
    (frame(TEXT, b"unmasked", mask=False), 1002),
    (frame(TEXT, b"rsv1", rsv=4), 1002),
    (frame(TEXT, b"rsv3", rsv=1), 1002),
    (frame(0x3, b"reserved data opcode"), 1002),
    (frame(0xB, b"reserved control opcode"), 1002),
    (frame(PING, b"fragmented ping", fin=False), 1002),
    (frame(PING, b"p" * 126), 1002),
    (frame(CONTINUATION, b"no message to continue"), 1002),
    (frame(TEXT, b"start", fin=False) + frame(TEXT, b"another start"), 1002),
    (frame(TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"), 1007),
    (frame(TEXT, b"\xc0\xaf overlong"), 1007),
    (frame(TEXT, b"ends inside \xe2\x82"), 1007),
    (frame(TEXT, b"ok so far", fin=False) + frame(CONTINUATION, b"\xff"), 1007),
    (frame(CLOSE, b"\x03"), 1002),
    (close_frame(999), 1002),
    (close_frame(1004), 1002),
    (close_frame(1005), 1002),
    (close_frame(1006), 1002),
    (close_frame(1015), 1002),
    (close_frame(5000), 1002),
    (close_frame(1000, b"\xff\xfe not utf-8"), 1007),
])
def test_protocol_violations_fail_the_connection(server, bad, code):
    ws = RawWebSocket(server.port)
    ws.send(bad, frame(TEXT, b"never echoed"))
    ws.expect_close(code)


def test_fragmented_text_with_a_ping_in_between(server):
    ws = RawWebSocket(server.port)
    euro = "€".encode()  # three bytes, split across fragments
    ws.send(frame(TEXT, b"price: " + euro[:1], fin=False), frame(PING, b"mid-message"),
            frame(CONTINUATION, euro[1:], fin=False), frame(CONTINUATION, b"5"))
    assert ws.recv_frame() == (PONG, b"mid-message", True)
    assert ws.recv_frame() == (TEXT, "price: €5".encode(), True)


def test_empty_and_binary_messages(server):
    ws = RawWebSocket(server.port)
    ws.send(frame(TEXT, b""), frame(BINARY, bytes(range(256))), frame(BINARY, b"", fin=False),
            frame(CONTINUATION, b"\x00"))
    assert ws.recv_frame() == (TEXT, b"", True)
    assert ws.recv_frame() == (BINARY, bytes(range(256)), True)
    assert ws.recv_frame() == (BINARY, b"\x00", True)


def test_frames_behind_the_handshake_are_read(server):
    ws = RawWebSocket(server.port, early=frame(TEXT, b"in the same packet"))
    assert ws.recv_frame() == (TEXT, b"in the same packet", True)


@pytest.mark.parametrize("code, reason", [(1000, b""), (1001, b"bye"), (3000, b""), (4999, "ü".encode())])
def test_client_close_is_echoed(server, code, reason):
    ws = RawWebSocket(server.port)
    ws.send(close_frame(code, reason))
    f = ws.recv_frame()
    assert f[0] == CLOSE and struct.unpack("!H", f[1][:2])[0] == code
    assert ws.recv_frame() is None


def test_close_without_a_code_is_answered_with_1000(server):
    ws = RawWebSocket(server.port)
    ws.send(frame(CLOSE, b""))
    assert ws.recv_frame() == (CLOSE, struct.pack("!H", 1000), True)
    assert ws.recv_frame() is None


@pytest.mark.parametrize("extra, status", [
    (b"Sec-WebSocket-Version: 8\r\n", 426),
])
def test_bad_handshakes(server, extra, status):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /ws/echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" + extra + b"\r\n")
        data = s.recv(65536)
    assert data.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"Sec-WebSocket-Version: 13\r\n" in data


@pytest.mark.parametrize("request_head", [
    b"POST /ws/echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    b"GET /ws/echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n",
    b"GET /ws/echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n",
])
def test_invalid_handshakes_get_400(server, request_head):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(request_head)
        assert s.recv(65536).startswith(b"HTTP/1.1 400 Bad Request\r\n")


# --- over HTTP/2 (RFC 8441) --------------------------------------------------------------

def test_websocket_over_http2_extended_connect(server):
    c = RawH2(server.port)
    settings = c.frames(lambda f: isinstance(f, SettingsFrame) and "ACK" not in f.flags)
    [ours] = [f for f in settings if isinstance(f, SettingsFrame) and "ACK" not in f.flags]
    assert ours.settings.get(0x8) == 1  # SETTINGS_ENABLE_CONNECT_PROTOCOL
    c.send(SettingsFrame(0, flags=["ACK"]))
    c.send(c.request(1, "/ws/echo", "CONNECT", end_stream=False,
                     extra=[(":protocol", "websocket"), ("sec-websocket-version", "13"),
                            ("sec-websocket-protocol", "chat")]))
    frames = c.frames(lambda f: isinstance(f, HeadersFrame) and f.stream_id == 1)
    assert status_of(frames, 1) == 200
    [headers] = [f for f in frames if isinstance(f, HeadersFrame)]
    assert dict(headers.decoded)["sec-websocket-protocol"] == "chat"
    c.send(c.data(1, frame(TEXT, b"over h2") + frame(PING, b"p")))
    got = b""
    while len(got) < len(b"\x8a\x01p\x81\x07over h2"):
        got += b"".join(f.data for f in c.frames(lambda f: isinstance(f, DataFrame)) if isinstance(f, DataFrame))
    assert got == b"\x8a\x01p\x81\x07over h2" or got == b"\x81\x07over h2\x8a\x01p"
    c.send(c.data(1, close_frame(1000)))
    frames = c.frames(ends(1))
    body = b"".join(f.data for f in frames if isinstance(f, DataFrame))
    assert body == b"\x88\x02\x03\xe8"  # our close echoed, then END_STREAM
    # The connection carries on with ordinary requests.
    c.send(c.request(3, "/"))
    frames = c.frames(ends(3))
    assert b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == 3) == b"Hello, World!"


def test_websocket_over_http2_denied(server):
    c = RawH2(server.port)
    c.send(c.request(1, "/ws/deny", "CONNECT", end_stream=False,
                     extra=[(":protocol", "websocket"), ("sec-websocket-version", "13")]))
    assert status_of(c.frames(ends(1)), 1) == 403
