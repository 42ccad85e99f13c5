"""Slow and greedy clients: 500 slowloris connections and 100 slow readers against one
worker, while a probe keeps getting answers; every attacker is cut off by its deadline.
Bounded: 127.0.0.1 only, a fixed number of sockets, everything over in seconds."""
import fcntl
import selectors
import socket
import struct
import subprocess
import termios
import threading
import time

from conftest import wait_until

SLOWLORIS = 500
SLOW_READERS = 100


def server_side_established(port):
    out = subprocess.run(["ss", "-tnH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, timeout=10).stdout
    return len(out.splitlines())


def queued_bytes(sock):
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]


def probe(port, stop, latencies, failures):
    while not stop.is_set():
        start = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            if not data.endswith(b"Hello, World!"):
                failures.append(data[:60])
        except OSError as e:
            failures.append(repr(e))
        latencies.append(time.monotonic() - start)
        time.sleep(0.05)  # the probe's pace


def test_slowloris_and_slow_readers_do_not_starve_others(start_server):
    s = start_server("-w", "1", "--header-timeout", "2", "--send-timeout", "2",
                     "--worker-connections", "1000")
    # Attackers: slowloris send a partial head and trickle; slow readers ask for a
    # large streamed response and never read it.
    lorises, readers = [], []
    for _ in range(SLOWLORIS):
        c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        lorises.append(c)
    for _ in range(SLOW_READERS):
        c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # 64 KiB pieces fill both socket buffers within a few writes on any build, so
        # the worker is certainly blocked on this client and send_timeout applies.
        c.sendall(b"GET /chunks?n=1000&size=65536 HTTP/1.1\r\nHost: x\r\n\r\n")
        readers.append(c)
    # The probe starts once every slow reader has its first bytes: the worker has then
    # served all 600 attackers' requests and filled the readers' socket buffers, work
    # the requests legitimately cost (under ASan, copying a few hundred MB took over a
    # second); what is measured is the probe's service while the attack holds on.
    wait_until(lambda: all(queued_bytes(c) > 0 for c in readers), timeout=30,
               what="every slow reader to have its first bytes")
    stop = threading.Event()
    latencies, failures = [], []
    t = threading.Thread(target=probe, args=(s.port, stop, latencies, failures))
    t.start()
    start = time.monotonic()
    for c in lorises:
        try:
            c.send(b"a")  # one trickled byte each: the head deadline does not move
        except OSError:
            pass
    # Every slowloris gets 408 and a close from its header deadline.
    sel = selectors.DefaultSelector()
    for c in lorises:
        c.setblocking(False)
        sel.register(c, selectors.EVENT_READ)
    answers, open_lorises = {}, set(lorises)
    deadline = time.monotonic() + 10
    while open_lorises and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            c = key.fileobj
            try:
                chunk = c.recv(4096)
            except OSError:
                chunk = b""
            if chunk:
                answers[c] = answers.get(c, b"") + chunk
            else:
                sel.unregister(c)
                open_lorises.discard(c)
    loris_done = time.monotonic() - start
    stop.set()
    t.join(10)
    # Slow readers are closed once they have not taken bytes for send_timeout. Seen from
    # the server's side: its end of each connection leaves ESTABLISHED (the client
    # reads nothing, so it cannot see the close without becoming a fast reader).
    wait_until(lambda: server_side_established(s.port) == 0, timeout=20,
               what="slow readers to be closed by send_timeout")
    for c in lorises + readers:
        c.close()

    assert not open_lorises, f"{len(open_lorises)} slowloris connections still open"
    assert loris_done < 8
    assert sum(1 for a in answers.values() if a.startswith(b"HTTP/1.1 408 ")) == SLOWLORIS
    assert failures == []
    assert len(latencies) >= 20
    # The probe's answers stayed prompt throughout (its normal latency here is a few ms).
    assert max(latencies) < 1.0, max(latencies)
    assert "Worker" in s.log() and "WORKER TIMEOUT" not in s.log()
