"""Behind proxies and load balancers: forwarded headers from trusted peers only, the
PROXY protocol, and a health endpoint that turns unhealthy when a worker drains."""
import signal
import socket
import struct
import subprocess

import pytest

from conftest import parse_responses, raw_exchange


def scope_of(port, headers=b"", path=b"/scope"):
    data, _ = raw_exchange(port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + headers
                           + b"Connection: close\r\n\r\n")
    [(status, _, body)] = parse_responses(data)
    assert status == 200
    return dict(line.split("=", 1) for line in body.decode().splitlines() if not line.startswith("header="))


@pytest.mark.parametrize("headers, client, scheme", [
    (b"", "127.0.0.1", "http"),
    (b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n", "203.0.113.7:0", "https"),
    # The client's own forged entry is left of what our proxy appended: not believed.
    (b"X-Forwarded-For: 6.6.6.6, 203.0.113.7, 127.0.0.1\r\n", "203.0.113.7:0", "http"),
    (b"Forwarded: for=198.51.100.2;proto=https, for=127.0.0.1\r\n", "198.51.100.2:0", "https"),
    (b'Forwarded: for="[2001:db8::1]:4711";proto=http\r\n', "2001:db8::1:4711", "http"),
    (b"X-Forwarded-Proto: gopher\r\n", "127.0.0.1", "http"),  # not a scheme we know
])
def test_forwarded_headers_from_a_trusted_proxy(server, headers, client, scheme):
    got = scope_of(server.port, headers)
    if client == "127.0.0.1":
        assert got["client"].startswith("127.0.0.1:")  # the peer itself, with its port
    else:
        assert got["client"] == client
    assert got["scheme"] == scheme


def test_each_request_on_a_keep_alive_connection_has_its_own_forwarded_client(server):
    # The connection keeps one scope: a client rewritten for one request must not leak
    # into the next, which carries no forwarding fields (or other ones).
    requests = [b"X-Forwarded-For: 203.0.113.7\r\n", b"", b"Forwarded: for=198.51.100.2\r\n",
                b"X-Forwarded-Proto: https\r\n"]
    data, _ = raw_exchange(server.port, b"".join(
        b"GET /scope HTTP/1.1\r\nHost: x\r\n" + fields +
        (b"Connection: close\r\n" if i == len(requests) - 1 else b"") + b"\r\n"
        for i, fields in enumerate(requests)))
    scopes = [dict(line.split("=", 1) for line in body.decode().splitlines()
                   if not line.startswith("header=")) for _, _, body in parse_responses(data)]
    assert [s["client"].split(":")[0] for s in scopes] == [
        "203.0.113.7", "127.0.0.1", "198.51.100.2", "127.0.0.1"]
    assert [s["scheme"] for s in scopes] == ["http", "http", "http", "https"]
    assert scopes[1]["client"] == scopes[3]["client"]  # the peer, with its port


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(start_server):
    s = start_server("--forwarded-allow-ips", "10.0.0.0/8, fd00::/8")
    got = scope_of(s.port, b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n"
                           b"Forwarded: for=198.51.100.2;proto=https\r\n")
    assert got["client"].startswith("127.0.0.1:") and got["scheme"] == "http"


def test_forwarded_over_http2(start_server):
    s = start_server("--forwarded-allow-ips", "*")
    out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-H", "X-Forwarded-For: 192.0.2.9",
                          "-H", "X-Forwarded-Proto: https", s.url + "/scope"],
                         capture_output=True, timeout=10).stdout.decode()
    assert "client=192.0.2.9:0\n" in out and "scheme=https\n" in out


def test_bad_network_list_is_a_config_error(start_server):
    s = start_server("--forwarded-allow-ips", "10.0.0.0/33", wait_ready=False)
    assert s.proc.wait(10) == 2
    assert "key 'forwarded_allow_ips': bad prefix length in '10.0.0.0/33'" in s.proc.stderr.read().decode()


# --- PROXY protocol -----------------------------------------------------------------

def proxy_v2(src, dst, sport, dport, command=0x21):
    family = 0x11 if "." in src else 0x21
    pack = (lambda a: socket.inet_pton(socket.AF_INET, a)) if family == 0x11 else \
        (lambda a: socket.inet_pton(socket.AF_INET6, a))
    body = pack(src) + pack(dst) + struct.pack("!HH", sport, dport)
    tlv = b"\x04\x00\x03abc"  # a TLV we ignore (PP2_TYPE_NOOP)
    return (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([command, family]) + struct.pack("!H", len(body) + len(tlv))
            + body + tlv)


@pytest.mark.parametrize("header, client", [
    (b"PROXY TCP4 192.0.2.10 203.0.113.1 56324 443\r\n", "192.0.2.10:56324"),
    (b"PROXY TCP6 2001:db8::5 2001:db8::1 40000 443\r\n", "2001:db8::5:40000"),
    (b"PROXY UNKNOWN\r\n", None),
    (proxy_v2("192.0.2.20", "203.0.113.1", 1234, 443), "192.0.2.20:1234"),
    (proxy_v2("2001:db8::20", "2001:db8::1", 4321, 443), "2001:db8::20:4321"),
    (proxy_v2("192.0.2.20", "203.0.113.1", 1234, 443, command=0x20), None),  # LOCAL: health checks
])
def test_proxy_protocol_gives_the_client_address(start_server, header, client):
    s = start_server("--proxy-protocol", "--forwarded-allow-ips", "")
    data, _ = raw_exchange(s.port, header + b"GET /scope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    [(status, _, body)] = parse_responses(data)
    assert status == 200
    got = dict(l.split("=", 1) for l in body.decode().splitlines() if not l.startswith("header="))
    if client is None:
        assert got["client"].startswith("127.0.0.1:")  # the real peer
    else:
        assert got["client"] == client


@pytest.mark.parametrize("bad", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # no header at all
    b"PROXY TCP4 192.0.2.10 203.0.113.1 56324\r\n",  # a field missing
    b"PROXY TCP4 not-an-ip 203.0.113.1 1 2\r\n",
    b"PROXY TCP4 192.0.2.10 203.0.113.1 99999 443\r\n",
    b"PROXY " + b"x" * 200 + b"\r\n",  # longer than v1 allows
    b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c" + bytes(12),  # version 3
])
def test_bad_proxy_headers_close_the_connection(start_server, bad):
    s = start_server("--proxy-protocol")
    data, closed = raw_exchange(s.port, bad + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (data, closed) == (b"", True)


def test_proxy_header_from_an_untrusted_peer_is_refused(start_server):
    s = start_server("--proxy-protocol", "--proxy-allow-ips", "10.0.0.0/8")
    data, closed = raw_exchange(s.port, b"PROXY TCP4 192.0.2.10 203.0.113.1 1 2\r\n"
                                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (data, closed) == (b"", True)


def test_proxy_protocol_with_http2_and_a_slow_header(start_server):
    s = start_server("--proxy-protocol")
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        header = b"PROXY TCP4 192.0.2.30 203.0.113.1 5555 80\r\n"
        c.sendall(header[:10])  # a header split across reads
        c.sendall(header[10:] + b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        first = c.recv(9)
        assert first[3] == 0x04  # the server's SETTINGS: HTTP/2 behind the PROXY header


# --- health endpoint ------------------------------------------------------------------

def test_health_endpoint_turns_503_when_the_worker_drains(start_server):
    s = start_server("-w", "1", "--health-path", "/healthz", "--graceful-timeout", "10")
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = c.recv(65536)
        assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\nok\n")
        # A slow request keeps the worker draining for a while once TERM arrives.
        slow = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        slow.sendall(b"GET /slow?ms=1500 HTTP/1.1\r\nHost: x\r\n\r\n")
        s.wait_log(r"Booting worker")
        s.signal(signal.SIGTERM)
        s.wait_log(r"Worker draining")
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = c.recv(65536)
        assert data.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), data
        assert b"connection: close\r\n" in data and data.endswith(b"draining\n")
        assert slow.recv(65536).endswith(b"slow done")
        slow.close()
    assert s.proc.wait(15) == 0


def test_health_endpoint_over_http2_and_not_when_off(start_server):
    s = start_server("--health-path", "/healthz")
    out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", s.url + "/healthz"],
                         capture_output=True, timeout=10).stdout
    assert out == b"ok\n"
    plain = start_server()
    out = subprocess.run(["curl", "-sS", plain.url + "/healthz"], capture_output=True, timeout=10).stdout
    assert out == b"not found"  # the app's own answer
