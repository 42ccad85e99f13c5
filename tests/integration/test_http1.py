"""HTTP/1.1 behaviour of a worker, with curl and raw sockets."""
import email.utils
import re
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT, parse_responses, raw_exchange, wait_until

CORPUS = ROOT / "tests" / "data" / "requests"


def curl(*args):
    r = subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def test_hello_has_date_server_and_length(server):
    out = curl("-i", server.url + "/")
    head, body = out.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    headers = dict(l.lower().split(": ", 1) for l in lines[1:])
    assert headers["content-length"] == "13"
    assert headers["server"] == "tricorn"
    assert headers["date"].endswith(" gmt")
    assert body == b"Hello, World!"


def head_fields(head):
    """The fields of a response head, each name lower-cased, with every value it had."""
    fields = {}
    for line in head.decode().split("\r\n")[1:]:
        name, value = line.split(": ", 1)
        fields.setdefault(name.lower(), []).append(value)
    return fields


@pytest.mark.parametrize("code,line", [
    (200, "HTTP/1.1 200 OK"), (201, "HTTP/1.1 201 Created"), (404, "HTTP/1.1 404 Not Found"),
    (431, "HTTP/1.1 431 Request Header Fields Too Large"), (418, "HTTP/1.1 418 Unknown"),
    (599, "HTTP/1.1 599 Unknown")])
def test_status_lines_name_known_statuses_and_say_unknown_otherwise(server, code, line):
    data, _ = raw_exchange(server.port,
        f"GET /status?code={code} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.decode().split("\r\n")[0] == line
    fields = head_fields(head)
    assert fields["server"] == ["tricorn"]
    date = email.utils.parsedate_to_datetime(fields["date"][0])
    assert re.fullmatch(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT",
                        fields["date"][0])
    assert abs(date.timestamp() - time.time()) < 60
    assert body == b"status"


@pytest.mark.parametrize("query,server_field,date_is_ours", [
    ("", "testapp/1", False), ("only=server", "testapp/1", True)])
def test_the_apps_date_and_server_fields_replace_ours(server, query, server_field, date_is_ours):
    data, _ = raw_exchange(server.port,
        f"GET /own-fields?{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head, _, body = data.partition(b"\r\n\r\n")
    fields = head_fields(head)
    assert fields["server"] == [server_field]
    assert len(fields["date"]) == 1
    assert (fields["date"][0] != "Thu, 01 Jan 1970 00:00:00 GMT") == date_is_ours
    assert body == b"own"


def test_keep_alive_serves_many_requests_on_one_connection(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        pids = set()
        for _ in range(5):
            s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while not data.endswith(b"\r\n\r\n") and b"\r\n\r\n" not in data:
                data += s.recv(4096)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
            while len(body) < length:
                body += s.recv(4096)
            assert head.startswith(b"HTTP/1.1 200")
            assert b"connection: close" not in head.lower()
            pids.add(body)
        assert len(pids) == 1


def test_pipelined_requests_answered_in_order(server):
    reqs = b"".join(
        f"GET /scope?n={i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(10))
    reqs += b"GET /?last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    data, closed = raw_exchange(server.port, reqs)
    assert closed
    responses = parse_responses(data)
    assert [r[0] for r in responses] == [200] * 11
    for i, (_, _, body) in enumerate(responses[:10]):
        assert f"query_string=n={i}\n".encode() in body
    assert responses[10][1]["connection"] == "close"


def test_chunked_request_body_reaches_the_app(server):
    data, _ = raw_exchange(server.port,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n")
    [(status, headers, body)] = parse_responses(data)
    assert status == 200
    assert body == b"hello world"


def test_chunked_request_with_curl(server):
    out = subprocess.run(
        ["curl", "-sS", "-H", "Transfer-Encoding: chunked", "--data-binary", "@-",
         server.url + "/length"], input=b"x" * 100000, capture_output=True, timeout=30).stdout
    assert out == b"100000"


def test_chunked_streamed_response(server):
    data, _ = raw_exchange(server.port, b"GET /chunks?n=4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head = data.split(b"\r\n\r\n")[0].lower()
    assert b"transfer-encoding: chunked" in head
    assert b"content-length" not in head
    [(status, _, body)] = parse_responses(data)
    assert body == b"piece;" * 4 + b"end"


def test_http10_gets_a_length_and_a_close(server):
    data, closed = raw_exchange(server.port, b"GET /chunks HTTP/1.0\r\n\r\n")
    assert closed
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert b"connection: close" in head.lower()
    assert body == b"piece;" * 3 + b"end"


def test_expect_100_continue(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = s.recv(4096)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"hello")
        data = b""
        while not data.endswith(b"hello"):
            data += s.recv(4096)
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")


def test_expect_100_continue_not_sent_when_the_app_ignores_the_body(server):
    data, closed = raw_exchange(
        server.port,
        b"POST /ignore-body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert not data.startswith(b"HTTP/1.1 100")
    [(status, headers, body)] = parse_responses(data)
    assert (status, body) == (200, b"ignored")
    assert headers["connection"] == "close"  # the body was never asked for
    assert closed


def test_curl_expect_100_continue_upload(server):
    out = subprocess.run(
        ["curl", "-sS", "-H", "Expect: 100-continue", "--data-binary", "@-", server.url + "/length"],
        input=b"y" * 2_000_000, capture_output=True, timeout=30).stdout
    assert out == b"2000000"


def test_head_has_headers_but_no_body(server):
    data, closed = raw_exchange(server.port,
        b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"content-length: 13" in head.lower()
    assert rest.startswith(b"HTTP/1.1 200 OK")  # no body bytes in between
    assert rest.endswith(b"Hello, World!")


@pytest.mark.parametrize("code", [204, 304])
def test_no_body_statuses_have_no_framing(server, code):
    data, _ = raw_exchange(server.port,
        f"GET /status?code={code} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {code} ".encode())
    assert b"content-length" not in head.lower() and b"transfer-encoding" not in head.lower()
    assert rest == b""


def test_scope_fields(server):
    body = curl(server.url + "/scope/a%20b/c?x=%20&y=2", "-H", "X-Custom: Value").decode()
    assert "method=GET\n" in body
    assert "http_version=1.1\n" in body
    assert "path=/scope/a b/c\n" in body
    assert "raw_path=/scope/a%20b/c\n" in body
    assert "query_string=x=%20&y=2\n" in body
    assert "scheme=http\n" in body
    assert f"server=127.0.0.1:{server.port}\n" in body
    assert "client=127.0.0.1:" in body
    assert "header=x-custom: Value\n" in body


@pytest.mark.parametrize("path,expected_log", [
    ("/throw", "the app failed on purpose"),
    ("/none", "the app returned without a response"),
    ("/body-first", "http.response.body sent before http.response.start"),
    ("/two-starts", "http.response.start sent twice"),
])
def test_app_errors_give_500_and_the_worker_keeps_serving(server, path, expected_log):
    data, closed = raw_exchange(server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    [(status, headers, body)] = parse_responses(data)
    assert status == 500
    assert headers["connection"] == "close"
    assert closed
    server.wait_log(f"Error handling request GET {path}: {expected_log}")
    assert curl(server.url + "/") == b"Hello, World!"


def test_app_error_after_the_response_started_closes_the_connection(server):
    data, closed = raw_exchange(server.port, b"GET /throw-after-start HTTP/1.1\r\nHost: x\r\n\r\n")
    assert closed
    assert data.startswith(b"HTTP/1.1 200 OK")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body == b"7\r\npartial\r\n"  # no final chunk: the client can tell it is cut
    server.wait_log("Error handling request GET /throw-after-start: failed mid-response")
    assert curl(server.url + "/") == b"Hello, World!"


def test_limits_answer_like_gunicorn(start_server):
    s = start_server("--limit-request-line", "100", "--limit-request-fields", "5",
                     "--limit-request-field_size", "200")
    cases = [
        (b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(6)) + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 300 + b"\r\n\r\n", 431),
        (b"GET / HTTP/3.0\r\nHost: x\r\n\r\n", 505),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: br, chunked\r\n\r\n", 501),
        (b"GARBAGE\r\n\r\n", 400),
    ]
    for request, status in cases:
        data, closed = raw_exchange(s.port, request)
        assert data.startswith(f"HTTP/1.1 {status} ".encode()), (request[:60], data[:80])
        assert b"connection: close" in data.lower()
        assert closed


def invalid_corpus():
    return sorted(p.name for p in (CORPUS / "invalid").iterdir())


@pytest.mark.parametrize("name", invalid_corpus())
def test_invalid_requests_are_rejected_and_nothing_behind_them_is_answered(server, name):
    status = int(name[:3])
    request = (CORPUS / "invalid" / name).read_bytes()
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    data, closed = raw_exchange(server.port, request + smuggled)
    assert data.startswith(f"HTTP/1.1 {status} ".encode()), data[:100]
    assert closed
    responses = parse_responses(data)
    assert len(responses) == 1  # the smuggled request got no answer
    assert b"smuggled" not in data


def test_header_timeout_answers_408(start_server):
    s = start_server("--header-timeout", "0.5")
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
        start = time.monotonic()
        data = b""
        while True:
            b = c.recv(4096)
            if not b:
                break
            data += b
        assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert 0.4 < time.monotonic() - start < 4


def test_slowloris_trickle_does_not_extend_the_header_deadline(start_server):
    s = start_server("--header-timeout", "1")
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        start = time.monotonic()
        request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        closed_at = None
        for byte in request:
            try:
                c.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            c.settimeout(0.1)
            try:
                if c.recv(4096, socket.MSG_PEEK):
                    break
            except socket.timeout:
                pass
        c.settimeout(5)
        data = c.recv(4096)
        assert data.startswith(b"HTTP/1.1 408")
        assert time.monotonic() - start < 4


def test_idle_keep_alive_connection_is_closed_after_keepalive(start_server):
    s = start_server("--keep-alive", "0.5")
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not data.endswith(b"Hello, World!"):
            data += c.recv(4096)
        start = time.monotonic()
        assert c.recv(4096) == b""  # closed by the server, not reset
        assert 0.3 < time.monotonic() - start < 4


def test_large_streamed_echo_round_trips(server):
    payload = bytes(range(256)) * 40000  # 10 MB
    out = subprocess.run(["curl", "-sS", "--data-binary", "@-", "-H", "Content-Type: application/x-test",
                          server.url + "/echo"],
                         input=payload, capture_output=True, timeout=60).stdout
    assert out == payload


def test_unix_socket_bind(start_server, tmpdir_path):
    path = f"{tmpdir_path}/t.sock"
    s = start_server("-b", f"unix:{path}")
    out = curl("--unix-socket", path, "http://localhost/scope").decode()
    assert "path=/scope\n" in out
    assert "client=:0\n" in out


def test_request_without_a_body_still_gets_one_http_request(server):
    """ASGI: every request's first receive() is an http.request, empty when there is no
    body. Found by the connection fuzzer: an app that reads the body of a GET used to
    wait for the client to leave, and with a buffer full of pipelined requests it waited
    forever."""
    data, closed = raw_exchange(server.port, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
                                + b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert [(status, body) for status, _, body in parse_responses(data)] == [(200, b""), (200, b"")]
    assert closed


def read_until(c, end, count=1):
    data = b""
    while data.count(end) < count:
        chunk = c.recv(65536)
        assert chunk, "closed early"
        data += chunk
    return data


def parked_connection(s):
    """A connection that made one request and has been parked."""
    c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    read_until(c, b"Hello, World!")
    s.wait_log(r"parked after 1 request\(s\)")
    return c


def test_a_parked_connection_serves_its_next_requests_and_closes_at_keepalive(start_server):
    # Soon after it goes idle, a keep-alive connection is parked (its coroutine and
    # object end; the parking lot keeps the socket in an epoll set of its own). It must
    # go on exactly as an idle connection would: requests served, pipelining and split
    # heads included, and closed (not reset) at the keep-alive deadline.
    s = start_server("-w", "1", "--keep-alive", "4", "--log-level", "debug")
    with parked_connection(s) as c:
        c.sendall(b"GET /scope HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHo")
        c.sendall(b"st: x\r\n\r\n")
        data = read_until(c, b"Hello, World!")
        assert data.count(b"HTTP/1.1 200 OK\r\n") == 2
        assert b"path=/scope\n" in data and b"client=127.0.0.1:" in data  # the peer survives
        s.wait_log(r"parked after 3 request\(s\)")
        start = time.monotonic()
        assert c.recv(4096) == b""  # closed by the server at keep-alive, not reset
        assert 2 < time.monotonic() - start < 6


def worker_rss(pid):
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * 4096


def raise_descriptor_limit(count):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count), hard))


def open_parked(s, conns, count, wave=None):
    """Opens `count` connections that make one request each, `wave` at a time (all at
    once by default), and waits until every connection in `conns` (these included) has
    been parked."""
    wave = wave or count
    for _ in range(0, count, wave):
        start = len(conns)
        for _ in range(wave):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            conns.append(c)
        for c in conns[start:]:
            read_until(c, b"Hello, World!")
        wait_until(lambda: s.log().count("parked after 1 request(s)") == len(conns),
                   what=f"{len(conns)} parked connections")


def test_parked_connections_cost_little_memory(start_server):
    # Connections that each make one request and then stay idle are parked soon (10 ms),
    # and what stays per connection is the lot's record. Two bursts, opened 50 at a time
    # (each wave parked before the next): the second one's growth is what a parked
    # connection costs, once the first has set the high-water mark of what the
    # connections use while they are not parked. (Before the lot, a parked connection
    # kept Asio's state, a pending read and a larger record: about 0.8 KiB.) Not run
    # under ASan, whose heap is another.
    burst = 500
    raise_descriptor_limit(8 * burst)
    s = start_server("-w", "1", "--keep-alive", "60", "--worker-connections", "5000",
                     "--log-level", "debug")
    [worker] = s.wait_workers(1)
    conns = []
    try:
        open_parked(s, conns, burst, wave=50)
        first = worker_rss(worker)
        open_parked(s, conns, burst, wave=50)
        grown = worker_rss(worker) - first
        assert grown < burst * 512, f"{grown / burst:.0f} bytes per parked connection"
    finally:
        for c in conns:
            c.close()


def test_a_thousand_parked_connections_wake_at_once(start_server):
    # The lot reads its epoll set 64 events at a time, until it reports nothing.
    count = 1000
    raise_descriptor_limit(4 * count)
    s = start_server("-w", "1", "--keep-alive", "60", "--worker-connections", "5000",
                     "--log-level", "debug")
    conns = []
    try:
        open_parked(s, conns, count)
        for c in conns:
            c.sendall(b"GET /scope HTTP/1.1\r\nHost: x\r\n\r\n")
        for c in conns:
            data = read_until(c, b"path=/scope\n")
            assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.count(b"HTTP/1.1") == 1
        assert s.log().count("parked after 1 request(s)") == count
    finally:
        for c in conns:
            c.close()


def scope_lines(data):
    return dict(l.split("=", 1) for l in data.decode("latin-1").split("\r\n\r\n", 1)[1].splitlines()
                if "=" in l and not l.startswith("header="))


@pytest.mark.parametrize("listener", ["proxy", "unix"])
def test_a_parked_connection_keeps_its_client_and_listener(start_server, tmpdir_path, listener):
    # The lot keeps the descriptor and the peer: a client named by a PROXY header (not
    # the socket's peer), and a unix socket's family, both survive parking.
    if listener == "proxy":
        s = start_server("--proxy-protocol", "--forwarded-allow-ips", "", "--log-level", "debug")
        c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        c.sendall(b"PROXY TCP4 192.0.2.10 203.0.113.1 56324 443\r\n")
        client = "192.0.2.10:56324"
    else:
        path = f"{tmpdir_path}/p.sock"
        s = start_server("-b", f"unix:{path}", "--log-level", "debug")
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(10)
        c.connect(path)
        client = ":0"
    with c:
        for n in (1, 2):
            c.sendall(b"GET /scope HTTP/1.1\r\nHost: x\r\n\r\n")
            data = read_until(c, b"path=/scope\n")
            assert data.startswith(b"HTTP/1.1 200 OK\r\n")
            assert scope_lines(data)["client"] == client
            s.wait_log(rf"parked after {n} request\(s\)")


def test_draining_closes_a_parked_connection_after_the_drain_window(start_server):
    s = start_server("-w", "1", "--keep-alive", "60", "--log-level", "debug")
    with parked_connection(s) as c:
        start = time.monotonic()
        s.signal(signal.SIGTERM)
        assert c.recv(4096) == b""  # the drain window is min(keepalive, 2 s), not 60 s
        assert time.monotonic() - start < 5
        assert s.proc.wait(timeout=10) == 0

