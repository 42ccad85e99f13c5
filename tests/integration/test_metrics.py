"""The Prometheus endpoint (metrics_bind), served by the master from counters the
workers keep in shared memory. Scraped with a real HTTP client."""
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import httpx

from conftest import wait_until
from h2frames import RawH2, ends
from wsframes import RawWebSocket


def metrics_url(s):
    m = s.wait_log(r"Metrics at: http://(127\.0\.0\.1:\d+)/metrics")
    return f"http://{m.group(1)}/metrics"


def scrape(url):
    r = httpx.get(url, timeout=5)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    values = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def curl(*args):
    subprocess.run(["curl", "-sS", "-o", "/dev/null", *args], check=True, timeout=10)


def test_requests_bytes_and_durations_are_counted(start_server):
    s = start_server("-w", "2", "--metrics-bind", "127.0.0.1:0")
    url = metrics_url(s)
    for _ in range(3):
        curl(s.url + "/")
    curl("--data-binary", "hello", s.url + "/echo")
    curl(s.url + "/nope")
    curl("--http2-prior-knowledge", s.url + "/")
    curl(s.url + "/throw")
    m = scrape(url)
    assert m['tricorn_requests_total{method="GET",status="2xx"}'] == 4
    assert m['tricorn_requests_total{method="POST",status="2xx"}'] == 1
    assert m['tricorn_requests_total{method="GET",status="4xx"}'] == 1
    assert m['tricorn_requests_total{method="GET",status="5xx"}'] == 1
    assert m["tricorn_request_duration_seconds_count"] == 7
    assert m['tricorn_request_duration_seconds_bucket{le="+Inf"}'] == 7
    assert m['tricorn_request_duration_seconds_bucket{le="10"}'] == 7
    assert m["tricorn_received_bytes_total"] > 7 * 30 and m["tricorn_sent_bytes_total"] > 7 * 100
    assert m['tricorn_workers{state="ready"}'] == 2
    assert m["tricorn_config_generation"] == 1


def test_open_connections_by_protocol_and_http2_streams(start_server):
    s = start_server("-w", "1", "--metrics-bind", "127.0.0.1:0")
    url = metrics_url(s)
    idle = socket.create_connection(("127.0.0.1", s.port))
    idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.recv(4096).endswith(b"Hello, World!")
    h2 = RawH2(s.port)
    h2.send(h2.request(1, "/slow?ms=3000"))  # a stream left open while we look
    ws = RawWebSocket(s.port)
    wait_until(lambda: scrape(url)["tricorn_http2_active_streams"] == 1, what="one open stream")
    m = scrape(url)
    assert m['tricorn_open_connections{protocol="http1"}'] == 1
    assert m['tricorn_open_connections{protocol="http2"}'] == 1
    assert m['tricorn_open_connections{protocol="websocket"}'] == 1
    for c in (idle, h2, ws):
        c.close()
    wait_until(lambda: (m := scrape(url))['tricorn_open_connections{protocol="http1"}'] == 0
               and m['tricorn_open_connections{protocol="http2"}'] == 0
               and m['tricorn_open_connections{protocol="websocket"}'] == 0,
               what="the connections to be gone")


def test_every_open_stream_ends_with_its_connection(start_server):
    # Two streams wait for request bodies when the client breaks the protocol: both apps
    # must hear that the client is gone and both streams be released. (A fuzzer found a
    # connection that ended only the stream it opened last, leaking the others.)
    s = start_server("-w", "1", "--metrics-bind", "127.0.0.1:0")
    url = metrics_url(s)
    h2 = RawH2(s.port)
    h2.send(h2.request(1, "/echo", "POST", end_stream=False),
            h2.request(3, "/echo", "POST", end_stream=False))
    wait_until(lambda: scrape(url)["tricorn_http2_active_streams"] == 2, what="two open streams")
    h2.send(b"\x00\x00\x02\x00\x00\x00\x00\x00\x00hi")  # DATA on stream 0: a connection error
    assert h2.wait_closed()
    wait_until(lambda: (m := scrape(url))["tricorn_http2_active_streams"] == 0
               and m['tricorn_open_connections{protocol="http2"}'] == 0,
               what="both streams and the connection to be gone")


def test_restarts_reloads_and_counters_that_outlive_workers(start_server, tmpdir_path):
    s = start_server("-w", "1", "--metrics-bind", "127.0.0.1:0", "--timeout", "1",
                     "--max-requests", "5", config="workers: 1\n")
    url = metrics_url(s)
    for _ in range(5):  # the fifth request recycles the worker
        curl(s.url + "/")
    wait_until(lambda: scrape(url)['tricorn_worker_restarts_total{cause="recycle"}'] == 1,
               what="a recycle")
    [worker] = s.wait_workers(1)
    s.wait_log(r"Worker exiting \(pid: \d+\) exited with code 0")
    import os
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: scrape(url)['tricorn_worker_restarts_total{cause="crash"}'] == 1, what="a crash")
    # Its worker times out (killed after 1 s without a heartbeat): curl gets no answer.
    subprocess.run(["curl", "-sS", "--max-time", "5", s.url + "/block?ms=3000"], capture_output=True,
                   timeout=10)
    wait_until(lambda: scrape(url)['tricorn_worker_restarts_total{cause="timeout"}'] == 1,
               what="a timeout")
    s.signal(signal.SIGHUP)
    wait_until(lambda: scrape(url)['tricorn_reloads_total{outcome="success"}'] == 1, what="a reload")
    Path(s.config_path).write_text("workers: 1\nbogus: 1\n")
    s.signal(signal.SIGHUP)
    wait_until(lambda: scrape(url)['tricorn_reloads_total{outcome="failure"}'] == 1,
               what="a failed reload")
    m = scrape(url)
    # Five requests by workers long gone are still counted: counters never go down.
    assert m['tricorn_requests_total{method="GET",status="2xx"}'] == 5
    assert m["tricorn_config_generation"] == 2


def test_a_stuck_scraper_does_not_block_the_master(start_server):
    s = start_server("--metrics-bind", "127.0.0.1:0")
    url = metrics_url(s)
    port = int(re.search(r":(\d+)/metrics", url).group(1))
    stuck = socket.create_connection(("127.0.0.1", port))
    stuck.sendall(b"GET /metr")  # and nothing more
    assert scrape(url)['tricorn_workers{state="ready"}'] == 1
    assert httpx.get(url.replace("/metrics", "/other"), timeout=5).status_code == 404
    s.signal(signal.SIGTTIN)  # the master still handles signals promptly
    s.wait_workers(2)
    stuck.close()


def test_upgrades_are_counted_and_the_endpoint_moves_to_the_new_master(start_server, tmpdir_path):
    import shutil
    from conftest import TRICORN, alive
    exe = Path(tmpdir_path, "tricorn")
    shutil.copy(TRICORN, exe)
    s = start_server("-w", "1", "--metrics-bind", "127.0.0.1:0", executable=exe)
    url = metrics_url(s)
    # A binary that cannot start: the upgrade fails, this master counts it.
    good = Path(tmpdir_path, "tricorn.good")
    shutil.copy(exe, good)
    broken = Path(tmpdir_path, "tricorn.new")
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    os.replace(broken, exe)
    s.signal(signal.SIGUSR2)
    wait_until(lambda: scrape(url)['tricorn_upgrades_total{outcome="failure"}'] == 1,
               what="a failed upgrade")
    # A good binary: the new master takes over the metrics socket with the listeners.
    os.replace(good, exe)
    old_master = s.master_pid
    s.signal(signal.SIGUSR2)
    msg = s.notify.wait_for("READY=1")
    s.master_pid = int(re.search(r"MAINPID=(\d+)", msg).group(1))
    wait_until(lambda: not alive(old_master), what="the old master to exit")
    m = scrape(url)  # same address, answered by the new master
    assert m['tricorn_workers{state="ready"}'] == 1
    assert m['tricorn_upgrades_total{outcome="failure"}'] == 0  # its own counters start anew
