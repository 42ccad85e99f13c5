"""HTTP/2: h2c with prior knowledge, Upgrade: h2c, TLS with ALPN, flow control,
streaming, limits, floods and the graceful stop, with curl, nghttp, h2load and raw
frames."""
import hashlib
import math
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hyperframe.frame import (ContinuationFrame, GoAwayFrame, HeadersFrame, PingFrame,
                              RstStreamFrame)

from conftest import wait_until
from hyperframe.frame import SettingsFrame

from h2frames import (PREFACE, REFUSED_STREAM, CANCEL, ENHANCE_YOUR_CALM, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR,
                      INTERNAL_ERROR, NO_ERROR, STREAM_CLOSED, RawH2, body_of, ends, goaways,
                      status_of)


def run(*args, input=None, timeout=60):
    r = subprocess.run(list(args), capture_output=True, timeout=timeout, input=input)
    assert r.returncode == 0, (args, r.stderr.decode(errors="replace"))
    return r.stdout


def head_and_body(out):
    """curl -i output, after any 101 interim response."""
    parts = out.split(b"\r\n\r\n")
    while parts[0].startswith(b"HTTP/1.1 101"):
        parts = parts[1:]
    return parts[0].decode(), b"\r\n\r\n".join(parts[1:])


def assert_still_serving(server):
    assert run("curl", "-sS", "--http2-prior-knowledge", server.url + "/") == b"Hello, World!"


@pytest.fixture
def certs(tmpdir_path):
    cert, key = Path(tmpdir_path, "cert.pem"), Path(tmpdir_path, "key.pem")
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
        "-out", str(cert), "-days", "2", "-subj", "/CN=localhost")
    return cert, key


def test_prior_knowledge(server):
    head, body = head_and_body(run("curl", "-sS", "-i", "--http2-prior-knowledge",
                                   server.url + "/scope?q=1", "-H", "X-Test: yes"))
    assert head.startswith("HTTP/2 200")
    assert "http_version=2\n" in body.decode()
    assert "query_string=q=1\n" in body.decode()
    assert "header=x-test: yes\n" in body.decode()
    assert f"header=host: 127.0.0.1:{server.port}\n" in body.decode()  # from :authority


def test_upgrade_without_body(server):
    out = run("curl", "-sS", "-i", "--http2", server.url + "/")
    assert out.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    head, body = head_and_body(out)
    assert head.startswith("HTTP/2 200")
    assert body == b"Hello, World!"


def test_upgrade_with_body(server):
    payload = os.urandom(200_000)
    out = run("curl", "-sS", "-i", "--http2", "--data-binary", "@-", server.url + "/echo",
              input=payload)
    assert out.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    head, body = head_and_body(out)
    assert head.startswith("HTTP/2 200")
    assert body == payload


def test_tls_negotiates_h2_and_http11(start_server, certs):
    cert, key = certs
    s = start_server("--certfile", str(cert), "--keyfile", str(key))
    url = f"https://127.0.0.1:{s.port}"
    head, body = head_and_body(run("curl", "-sS", "-i", "-k", url + "/scope"))
    assert head.startswith("HTTP/2 200")
    assert "scheme=https\n" in body.decode()
    head, body = head_and_body(run("curl", "-sS", "-i", "-k", "--http1.1", url + "/scope"))
    assert head.startswith("HTTP/1.1 200 OK")
    assert "http_version=1.1\n" in body.decode() and "scheme=https\n" in body.decode()
    # A second request on the same TLS connection: the wait between them reads through
    # OpenSSL, not with the pooled read plain sockets use.
    out = subprocess.run(["curl", "-sS", "-k", "--http1.1", "-v", url + "/", url + "/scope"],
                         capture_output=True, text=True, timeout=10)
    assert "Re-using existing connection" in out.stderr
    assert out.stdout.startswith("Hello, World!") and "scheme=https\n" in out.stdout


def test_bad_certificate_fails_the_boot(start_server, tmpdir_path):
    bogus = Path(tmpdir_path, "bogus.pem")
    bogus.write_text("not a certificate\n")
    s = start_server("--certfile", str(bogus), "--keyfile", str(bogus), wait_ready=False)
    assert s.proc.wait(15) == 3
    assert f"cannot load certfile {bogus}" in s.log()


def test_nghttp_client(server):
    out = run("nghttp", "-v", server.url + "/chunks?n=2").decode()
    assert re.search(r":status: 200", out)
    assert "piece;piece;end" in out


def test_h2load_has_no_failures(server):
    out = run("h2load", "-n", "20000", "-c", "8", "-m", "16", server.url + "/").decode()
    assert "requests: 20000 total, 20000 started, 20000 done, 20000 succeeded, 0 failed, 0 errored, 0 timeout" in out
    assert "status codes: 20000 2xx, 0 3xx, 0 4xx, 0 5xx" in out


def test_response_trailers(server):
    c = RawH2(server.port)
    c.send(c.request(1, "/trailers"))
    frames = c.frames(ends(1))
    assert status_of(frames, 1) == 200
    assert body_of(frames, 1) == b"body-end"
    trailer = [f for f in frames if isinstance(f, HeadersFrame) and f.stream_id == 1][-1]
    assert dict(trailer.decoded) == {"x-checksum": "abc123"}


def test_request_trailers_do_not_disturb_the_body(server):
    c = RawH2(server.port)
    h = c.request(1, "/echo", "POST", end_stream=False)
    trailers = HeadersFrame(1)
    trailers.data = c.encoder.encode([("x-trailer", "t")])
    trailers.flags.add("END_HEADERS")
    trailers.flags.add("END_STREAM")
    c.send(h, c.data(1, b"hello "), c.data(1, b"world"), trailers)
    frames = c.frames(ends(1))
    assert status_of(frames, 1) == 200
    assert body_of(frames, 1) == b"hello world"


def test_bad_preface_is_not_http2(server):
    c = RawH2(server.port, preface=False)
    c.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
    c.sock.settimeout(5)
    data = c.sock.recv(4096)
    assert data.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n")
    assert c.wait_closed()
    assert_still_serving(server)


def test_data_on_a_closed_stream(server):
    c = RawH2(server.port)
    c.send(c.request(1, "/"))
    c.frames(ends(1))
    c.send(c.data(1, b"late"))
    frames = c.frames(lambda f: isinstance(f, GoAwayFrame))
    assert goaways(frames) == [(1, STREAM_CLOSED)]
    assert c.wait_closed()
    assert_still_serving(server)


def test_data_beyond_the_window_resets_the_stream(server):
    c = RawH2(server.port)
    c.send(c.request(1, "/slow?ms=3000", "POST", end_stream=False))
    # 262144 bytes is the advertised window; the app reads nothing, so no WINDOW_UPDATE.
    c.send(*[c.data(1, b"x" * 16384) for _ in range(17)])
    frames = c.frames(lambda f: isinstance(f, RstStreamFrame))
    assert [(f.stream_id, f.error_code) for f in frames if isinstance(f, RstStreamFrame)] == \
        [(1, FLOW_CONTROL_ERROR)]
    # The connection lives on: another stream is served.
    c.send(c.request(3, "/"))
    assert body_of(c.frames(ends(3)), 3) == b"Hello, World!"


def test_header_list_over_the_limit_gets_431(server):
    c = RawH2(server.port)
    block = c.header_block("/", extra=[(f"x-big-{i}", "v" * 4000) for i in range(20)])
    chunks = [block[i:i + 16000] for i in range(0, len(block), 16000)]
    first = HeadersFrame(1)
    first.data = chunks[0]
    first.flags.add("END_STREAM")
    rest = []
    for i, chunk in enumerate(chunks[1:]):
        f = ContinuationFrame(1)
        f.data = chunk
        if i == len(chunks) - 2:
            f.flags.add("END_HEADERS")
        rest.append(f)
    c.send(first, *rest)
    frames = c.frames(ends(1))
    assert status_of(frames, 1) == 431
    c.send(c.request(3, "/"))
    assert body_of(c.frames(ends(3)), 3) == b"Hello, World!"


@pytest.mark.parametrize("with_preface", [False, True], ids=["own write", "with the preface"])
def test_continuation_flood_gets_enhance_your_calm(server, with_preface):
    # "with the preface": the attack arrives in the very first read, the one the
    # HTTP/1.1 side hands over (the writer once started only after it was fed).
    c = RawH2(server.port, preface=not with_preface)
    first = [PREFACE + SettingsFrame(0).serialize()] if with_preface else []
    h = c.request(1, "/")
    h.flags.discard("END_HEADERS")
    conts = []
    for _ in range(50):
        f = ContinuationFrame(1)
        f.data = b""
        conts.append(f)
    c.send(*first, h, *conts)  # one write
    frames = c.frames(lambda f: isinstance(f, GoAwayFrame))
    assert goaways(frames) == [(1, ENHANCE_YOUR_CALM)]
    assert c.wait_closed()
    assert_still_serving(server)


def test_rapid_reset_is_cut_off(server):
    c = RawH2(server.port)
    frames = []
    for stream_id in range(1, 4001, 2):
        r = RstStreamFrame(stream_id)
        r.error_code = CANCEL
        frames += [c.request(stream_id, "/slow?ms=1000"), r]
    started = time.monotonic()
    c.send(*frames)
    got = c.frames(lambda f: isinstance(f, GoAwayFrame), timeout=10)
    elapsed = time.monotonic() - started
    # nghttp2's reset-rate limit (a burst of 1000, then 33 a second) answers with
    # INTERNAL_ERROR: after stream 2001, plus what the bucket refilled while a busy
    # machine read the flood.
    [(last, code)] = goaways(got)
    assert code == INTERNAL_ERROR and last <= 2001 + 2 * 33 * math.ceil(elapsed)
    assert c.wait_closed()
    assert_still_serving(server)


def test_bad_settings_frame(server):
    c = RawH2(server.port)
    c.send(b"\x00\x00\x05\x04\x00\x00\x00\x00\x00" + b"12345")  # SETTINGS of length 5
    frames = c.frames(lambda f: isinstance(f, GoAwayFrame))
    assert goaways(frames) == [(0, FRAME_SIZE_ERROR)]
    assert c.wait_closed()
    assert_still_serving(server)


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_64mib_upload_to_a_slow_consumer_stays_bounded(server, tmpdir_path):
    src = Path(tmpdir_path, "upload.bin")
    src.write_bytes(os.urandom(64 * 1024 * 1024))
    out = Path(tmpdir_path, "echoed.bin")
    [worker] = server.wait_workers(1)
    before = rss_kib(worker)
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(worker))
            time.sleep(0.05)

    t = threading.Thread(target=sample)
    t.start()
    try:
        run("curl", "-sS", "--http2-prior-knowledge", "--data-binary", f"@{src}", "-o", str(out),
            server.url + "/slow-echo?ms=1", timeout=120)
    finally:
        done.set()
        t.join()
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
    # Flow control holds the client to the stream window (256 KiB): the worker grows by
    # a few buffers, not by the upload.
    assert peak[0] - before < 16 * 1024, (before, peak[0])


def test_many_connections_at_once_each_get_their_own_bytes(server, tmpdir_path):
    # A worker's sessions share nghttp2's frame buffer between drains of their output:
    # eight connections streaming different bodies at once must each get theirs intact.
    procs = []
    for i in range(8):
        src = Path(tmpdir_path, f"up{i}.bin")
        src.write_bytes(os.urandom(512 * 1024 + i * 4099))
        out = Path(tmpdir_path, f"down{i}.bin")
        procs.append((src, out, subprocess.Popen(
            ["curl", "-sS", "--http2-prior-knowledge", "--data-binary", f"@{src}", "-o", str(out),
             server.url + "/echo"])))
    for src, out, p in procs:
        assert p.wait(60) == 0
        assert out.read_bytes() == src.read_bytes()


def test_graceful_stop_finishes_open_streams_and_refuses_new_ones(start_server):
    s = start_server("-w", "1", "--graceful-timeout", "10")
    c = RawH2(s.port)
    c.send(c.request(1, "/slow?ms=2000"), c.ping())
    c.frames(lambda f: isinstance(f, PingFrame) and "ACK" in f.flags)  # stream 1 is in
    s.signal(signal.SIGTERM)
    frames = c.frames(lambda f: isinstance(f, GoAwayFrame) and f.last_stream_id == 1)
    assert goaways(frames) == [(2**31 - 1, NO_ERROR), (1, NO_ERROR)]
    c.send(c.request(3, "/"))  # after the final GOAWAY: never processed
    frames += c.frames(ends(1))
    assert status_of(frames, 1) == 200
    assert body_of(frames, 1) == b"slow done"
    rest = c.frames(lambda f: False, timeout=3)
    assert c.closed
    assert status_of(frames + rest, 3) is None
    assert s.proc.wait(15) == 0


def test_response_without_reading_the_body_arrives_whole_then_stops_the_upload(server):
    c = RawH2(server.port)
    c.send(c.request(1, "/ignore-body", "POST", end_stream=False), c.data(1, b"x" * 10000))
    frames = c.frames(lambda f: isinstance(f, RstStreamFrame))
    assert status_of(frames, 1) == 200
    assert body_of(frames, 1) == b"ignored"
    ended = [i for i, f in enumerate(frames) if f.stream_id == 1 and "END_STREAM" in f.flags]
    resets = [(i, f.error_code) for i, f in enumerate(frames) if isinstance(f, RstStreamFrame)]
    assert len(ended) == 1 and resets == [(resets[0][0], NO_ERROR)] and resets[0][0] > ended[0]


def test_settings_flood_gets_enhance_your_calm(server):
    c = RawH2(server.port)
    flood = [SettingsFrame(0, settings={4: 65535}) for _ in range(20000)]
    try:
        c.send(*flood)
    except OSError:
        pass  # the server may close before it has read everything
    frames = c.frames(lambda f: isinstance(f, GoAwayFrame), timeout=10)
    assert goaways(frames) == [(0, ENHANCE_YOUR_CALM)]
    assert c.wait_closed()
    assert_still_serving(server)


def test_ping_flood_from_a_client_that_does_not_read_is_cut_off(server):
    # The ACKs the client will not read pile up in nghttp2; past its outbound limit
    # the connection is told to calm down and closed, instead of growing.
    c = RawH2(server.port, rcvbuf=4096)
    [worker] = server.wait_workers(1)
    before = rss_kib(worker)
    for i in range(200000):
        p = PingFrame(0)
        p.opaque_data = b"%08d" % i
        try:
            c.send(p)
        except OSError:
            break
    frames = c.frames(lambda f: isinstance(f, GoAwayFrame), timeout=10)
    assert goaways(frames)[-1:] == [(0, ENHANCE_YOUR_CALM)]
    assert c.wait_closed()
    assert rss_kib(worker) - before < 16 * 1024
    assert_still_serving(server)


def test_more_streams_than_advertised_are_refused(server):
    c = RawH2(server.port)
    # 105 streams at once against SETTINGS_MAX_CONCURRENT_STREAMS 100.
    c.send(*[c.request(i, "/slow?ms=1000") for i in range(1, 211, 2)])
    frames = c.frames(lambda f: False, timeout=4)
    refused = sorted(f.stream_id for f in frames if isinstance(f, RstStreamFrame))
    assert [f.error_code for f in frames if isinstance(f, RstStreamFrame)] == [REFUSED_STREAM] * 5
    assert refused == list(range(201, 211, 2))
    answered = [sid for sid in range(1, 201, 2) if status_of(frames, sid) == 200]
    assert len(answered) == 100


def test_zero_window_stall_resets_the_stream_and_keeps_the_connection(start_server):
    s = start_server("--send-timeout", "1")
    stalled = RawH2(s.port, preface=False)
    # INITIAL_WINDOW_SIZE 0 and no WINDOW_UPDATE ever: the response can never be sent.
    stalled.send(PREFACE + SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}).serialize())
    stalled.send(stalled.request(1, "/chunks?n=8&size=100000"))
    started = time.monotonic()
    frames = stalled.frames(lambda f: isinstance(f, RstStreamFrame), timeout=10)
    waited = time.monotonic() - started
    assert status_of(frames, 1) == 200
    assert body_of(frames, 1) == b""
    assert [(f.stream_id, f.error_code) for f in frames if isinstance(f, RstStreamFrame)] == [(1, CANCEL)]
    # send_timeout; checked every half of it, at the heartbeat (1 s apart): within 1.5 x
    # send_timeout plus three heartbeats.
    assert 1.0 <= waited < 5.0
    # Other connections were served meanwhile, and this one still answers.
    other = RawH2(s.port)
    other.send(other.request(1, "/"))
    assert body_of(other.frames(ends(1)), 1) == b"Hello, World!"
    stalled.send(stalled.ping(b"stillup!"))
    acks = stalled.frames(lambda f: isinstance(f, PingFrame) and "ACK" in f.flags)
    assert [f.opaque_data for f in acks if isinstance(f, PingFrame)] == [b"stillup!"]
    s.wait_log(re.escape("HTTP/2 stream 1 from 127.0.0.1 reset: its flow-control window stayed closed"))  # worker lines reach the log within 100 ms
