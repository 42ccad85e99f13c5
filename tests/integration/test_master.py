"""The master: signals, worker supervision, configuration errors, systemd messages."""
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import BUILD, TESTAPP, TRICORN, Server, raw_exchange, wait_until


def get(port, path="/", timeout=10):
    data, _ = raw_exchange(port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
                           read_timeout=timeout)
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]) if head else 0, body


def test_version_and_help():
    out = subprocess.run([str(TRICORN), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == "tricorn 0.1.0\n"
    out = subprocess.run([str(TRICORN), "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for flag in ("--bind", "--workers", "--timeout", "--graceful-timeout", "--keep-alive",
                 "--backlog", "--max-requests", "--max-requests-jitter", "--limit-request-line",
                 "--limit-request-fields", "--limit-request-field-size", "--access-logfile",
                 "--error-logfile", "--log-level", "--pid", "--preload"):
        assert flag in out.stdout, flag


def test_bad_yaml_is_rejected_with_file_line_and_key(tmpdir_path):
    cfg = Path(tmpdir_path, "bad.yaml")
    cfg.write_text("workers: 2\nbind: 127.0.0.1:0\ntimeout: never\n")
    out = subprocess.run([str(TRICORN), "-c", str(cfg), str(TESTAPP)], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr == f"tricorn: error: {cfg}:3: key 'timeout': expected a number of seconds, got 'never'\n"

    cfg.write_text("workers: 2\nworkerz: 3\n")
    out = subprocess.run([str(TRICORN), "--check-config", "-c", str(cfg), str(TESTAPP)],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr == f"tricorn: error: {cfg}:2: key 'workerz': unknown setting\n"


def test_check_config_loads_the_app(tmpdir_path):
    ok = subprocess.run([str(TRICORN), "--check-config", "-w", "3", str(TESTAPP)],
                        capture_output=True, text=True)
    assert ok.returncode == 0
    assert ok.stdout == f"configuration OK: app {TESTAPP}, 3 worker(s), bind 127.0.0.1:8000\n"
    bad = subprocess.run([str(TRICORN), "--check-config", f"{TESTAPP}:nope"], capture_output=True, text=True)
    assert bad.returncode == 4
    assert f"app {TESTAPP} has no symbol 'nope'" in bad.stderr


def test_worker_boot_failure_stops_a_first_start(tmpdir_path):
    s = Server(tmpdir_path, ["-w", "2"], app=f"{TESTAPP}:missing_symbol", wait_ready=False)
    try:
        assert s.proc.wait(15) == 3
        assert "Worker failed to boot: app " in s.log()
        assert "has no symbol 'missing_symbol'" in s.log()
        assert s.log().count("Booting worker") == 2  # no respawn storm
    finally:
        s.stop()


def test_missing_app_file_is_a_boot_failure(tmpdir_path):
    s = Server(tmpdir_path, [], app="/nonexistent/libnothing.so", wait_ready=False)
    try:
        assert s.proc.wait(15) == 3
        assert "cannot load app /nonexistent/libnothing.so" in s.log()
    finally:
        s.stop()


def test_bind_failure_names_the_bind(start_server, tmpdir_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        out = subprocess.run([str(TRICORN), "-b", f"127.0.0.1:{port}", str(TESTAPP)],
                             capture_output=True, text=True, timeout=10)
        assert out.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}: bind: Address already in use" in out.stderr
    finally:
        taken.close()


def test_workers_flag_and_env(start_server):
    s = start_server("-w", "3")
    assert len(s.wait_workers(3)) == 3
    s2 = start_server(env={"WEB_CONCURRENCY": "2"})
    assert len(s2.wait_workers(2)) == 2


def test_ttin_and_ttou_change_the_worker_count(start_server):
    s = start_server("-w", "2")
    s.wait_workers(2)
    for expected in (3, 4, 5):
        s.signal(signal.SIGTTIN)
        s.wait_workers(expected)
    before = s.workers()
    for expected in (4, 3, 2, 1, 1):
        s.signal(signal.SIGTTOU)
        s.wait_log(f"Handling signal: ttou; workers: {expected}")
        s.wait_workers(expected)
    # TTOU retired the oldest workers first
    assert s.workers()[0] == before[-1]
    assert get(s.port)[0] == 200


def test_killed_worker_is_replaced(start_server):
    s = start_server("-w", "2")
    first = s.wait_workers(2)
    os.kill(first[0], signal.SIGKILL)
    now = s.wait_workers(2, exclude=[first[0]])
    assert first[1] in now
    s.wait_log(rf"Worker \(pid:{first[0]}\) was killed by SIGKILL")
    assert get(s.port)[0] == 200


def test_crashing_request_kills_only_its_worker(start_server):
    s = start_server("-w", "1")
    [pid] = s.wait_workers(1)
    status, _ = get(s.port, "/crash")
    assert status == 0  # the connection died with the worker
    s.wait_workers(1, exclude=[pid])
    assert get(s.port)[0] == 200


def test_blocked_worker_is_killed_at_timeout_and_replaced(start_server):
    s = start_server("-w", "1", "--timeout", "1")
    [pid] = s.wait_workers(1)
    threading.Thread(target=get, args=(s.port, "/block?ms=60000", 30), daemon=True).start()
    s.wait_log(rf"WORKER TIMEOUT \(pid:{pid}\)")
    s.wait_workers(1, exclude=[pid])
    s.wait_log(rf"Worker \(pid:{pid}\) was killed by SIGABRT")
    assert get(s.port)[0] == 200


def test_term_lets_an_in_flight_request_finish(start_server):
    s = start_server("-w", "1", "--graceful-timeout", "10")
    result = {}

    def slow():
        result["response"] = get(s.port, "/slow?ms=1500", timeout=10)

    t = threading.Thread(target=slow)
    t.start()
    s.wait_log(r"Booting worker")
    # The request is in flight once the worker holds a connection; TERM then.
    wait_until(lambda: b"127.0.0.1" in subprocess.run(
        ["ss", "-tnH", "state", "established", f"sport = :{s.port}"], capture_output=True).stdout,
        what="the slow request to be accepted")
    s.signal(signal.SIGTERM)
    s.wait_log("Handling signal: term")
    # New connections are refused once the master is gone, not before the request ends.
    t.join(15)
    assert result["response"] == (200, b"slow done")
    assert s.proc.wait(15) == 0
    assert "Shutting down: Master" in s.log()


def test_graceful_timeout_bounds_a_stop(start_server):
    s = start_server("-w", "1", "--graceful-timeout", "1")
    t = threading.Thread(target=get, args=(s.port, "/slow?ms=30000", 30), daemon=True)
    t.start()
    wait_until(lambda: b"127.0.0.1" in subprocess.run(
        ["ss", "-tnH", "state", "established", f"sport = :{s.port}"], capture_output=True).stdout,
        what="the slow request to be accepted")
    start = time.monotonic()
    s.signal(signal.SIGTERM)
    assert s.proc.wait(15) == 0
    assert time.monotonic() - start < 6


def test_int_stops_fast(start_server):
    s = start_server("-w", "2")
    workers = s.wait_workers(2)
    s.signal(signal.SIGINT)
    assert s.proc.wait(10) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_workers_exit_when_the_master_dies(start_server):
    s = start_server("-w", "2")
    workers = s.wait_workers(2)
    s.proc.kill()
    s.proc.wait()
    for pid in workers:
        wait_until(lambda: not Path(f"/proc/{pid}").exists() or
                   Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z",
                   what=f"worker {pid} to exit")


def test_max_requests_recycles_workers_without_failing_requests(start_server):
    s = start_server("-w", "1", "--max-requests", "20")
    [first] = s.wait_workers(1)
    served = {}
    # Until 50 requests after the first replacement answered, across the old worker's
    # retirement: the old one serves on while the new one boots, which takes a varying
    # number of requests (many more under the sanitizers). Bounded.
    after_replacement = 0
    for _ in range(5000):
        status, body = get(s.port, "/pid")
        assert status == 200
        served[int(body)] = served.get(int(body), 0) + 1
        after_replacement += len(served) >= 2
        if after_replacement == 50:
            break
    pids = list(served)
    assert pids[0] == first
    assert len(pids) >= 2
    # A worker keeps serving until its replacement is ready, so never fewer than 20.
    assert all(served[p] >= 20 for p in pids[:-1]), served
    s.wait_log("Autorestarting worker after 20 requests")
    s.wait_log(rf"Retiring worker {first} \(generation 1\): replaced after max_requests")


def test_pidfile_is_written_and_removed(start_server, tmpdir_path):
    pidfile = Path(tmpdir_path, "tricorn.pid")
    s = start_server("--pid", str(pidfile))
    assert pidfile.read_text() == f"{s.proc.pid}\n"
    s.signal(signal.SIGTERM)
    assert s.proc.wait(10) == 0
    assert not pidfile.exists()


def test_systemd_notifications(start_server):
    s = start_server("-w", "2")
    status = s.notify.wait_for("STATUS=generation 1, 2 worker(s)")
    assert status
    s.signal(signal.SIGTERM)
    s.notify.wait_for("STOPPING=1")
    assert s.proc.wait(10) == 0


def test_access_log_uses_gunicorn_format(start_server, tmpdir_path):
    log = Path(tmpdir_path, "access.log")
    s = start_server("--access-logfile", str(log))
    raw_exchange(s.port, b"GET /scope?q=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: tester\r\n"
                 b"Referer: http://ref/\r\nConnection: close\r\n\r\n")
    line = wait_until(lambda: log.exists() and log.read_text(), what="an access log line")
    import re
    assert re.fullmatch(
        r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET /scope\?q=1 HTTP/1\.1" 200 \d+ "http://ref/" "tester"\n',
        line), line


def test_hup_starts_a_new_generation_and_retires_the_old(start_server):
    s = start_server("-w", "2")
    old = s.wait_workers(2)
    s.signal(signal.SIGHUP)
    s.notify.wait_for("RELOADING=1")
    s.notify.wait_for("READY=1")
    new = s.wait_workers(2, exclude=old)
    assert not set(new) & set(old)
    assert get(s.port)[0] == 200


def test_hup_with_a_broken_config_changes_nothing(start_server, tmpdir_path):
    s = start_server(config="workers: 2\n")
    old = s.wait_workers(2)
    Path(s.config_path).write_text("workers: 2\nbogus: 1\n")
    s.signal(signal.SIGHUP)
    s.wait_log(r"Reload failed, keeping the running configuration: .*tricorn\.yaml:2: key 'bogus': unknown setting")
    assert s.workers() == old
    Path(s.config_path).write_text("workers: 3\n")
    s.signal(signal.SIGHUP)
    s.wait_workers(3, exclude=old)


def test_hup_whose_workers_cannot_boot_keeps_the_old_generation(start_server):
    s = start_server(config=f"workers: 2\napp: '{TESTAPP}'\n", app=False)
    old = s.wait_workers(2)
    Path(s.config_path).write_text(f"workers: 2\napp: '{TESTAPP}:no_such_app'\n")
    s.signal(signal.SIGHUP)
    s.wait_log(r"Reload failed, keeping generation 1: a new worker failed to boot: app .* has no symbol 'no_such_app'")
    s.notify.wait_for("READY=1")
    wait_until(lambda: s.workers() == old, what="only the old workers to remain")
    assert get(s.port) == (200, b"Hello, World!")
    # The next good reload goes through.
    Path(s.config_path).write_text(f"workers: 2\napp: '{TESTAPP}'\n")
    s.signal(signal.SIGHUP)
    s.wait_workers(2, exclude=old)


def test_hup_opens_added_binds_and_closes_removed_ones(start_server, tmpdir_path):
    sock_path = Path(tmpdir_path, "added.sock")
    s = start_server(config="workers: 1\nbind: '127.0.0.1:0'\n")
    Path(s.config_path).write_text(f"workers: 1\nbind: ['127.0.0.1:0', 'unix:{sock_path}']\n")
    s.signal(signal.SIGHUP)
    s.wait_log("Reload complete: generation 2")
    out = subprocess.run(["curl", "-sS", "--unix-socket", str(sock_path), "http://x/"],
                         capture_output=True, timeout=10).stdout
    assert out == b"Hello, World!"
    Path(s.config_path).write_text("workers: 1\nbind: '127.0.0.1:0'\n")
    s.signal(signal.SIGHUP)
    s.wait_log(rf"Closing removed bind unix:{sock_path}")
    assert not sock_path.exists()


def test_a_draining_worker_answers_keep_alive_with_connection_close(start_server):
    s = start_server("-w", "1", "--keep-alive", "5", "--graceful-timeout", "10")
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        def exchange():
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while not data.endswith(b"Hello, World!"):
                data += c.recv(4096)
            return data.split(b"\r\n\r\n")[0].lower()
        assert b"connection: close" not in exchange()
        s.signal(signal.SIGTERM)
        s.wait_log("Worker draining")
        assert b"connection: close" in exchange()  # served in the drain window, then closed
        assert c.recv(4096) == b""
    assert s.proc.wait(15) == 0
