"""Logs as operators read them: Gunicorn's access-log atoms for every protocol, JSON
lines, syslog priorities when stderr is the journal, and a writer that never makes a
worker's event loop wait for the disk."""
import fcntl
import json
import os
import re
import socket
import subprocess
from pathlib import Path

from conftest import wait_until


def lines_of(path, count):
    return wait_until(lambda: path.exists() and len(t := path.read_text().splitlines()) >= count and t,
                      what=f"{count} access log line(s)")


def test_access_log_atoms_for_http1_and_http2(start_server, tmpdir_path):
    log = Path(tmpdir_path, "access.log")
    fmt = '%(h)s "%(r)s" %(s)s %(b)s %(m)s %(U)s %(q)s %(H)s %(p)s %(L)s %({x-request-id}i)s %(nope)s'
    s = start_server("--access-logfile", str(log), "--access-logformat", fmt)
    subprocess.run(["curl", "-sS", "-H", "X-Request-Id: abc-1", s.url + "/chunks?n=2"],
                   capture_output=True, timeout=10, check=True)
    subprocess.run(["curl", "-sS", "--http2-prior-knowledge", s.url + "/status?code=404"],
                   capture_output=True, timeout=10, check=True)
    first, second = lines_of(log, 2)[:2]
    pid = r"<\d+>"
    assert re.fullmatch(rf'127\.0\.0\.1 "GET /chunks\?n=2 HTTP/1\.1" 200 15 GET /chunks n=2 HTTP/1\.1 {pid} '
                        r'\d+\.\d{6} abc-1 -', first), first
    assert re.fullmatch(rf'127\.0\.0\.1 "GET /status\?code=404 HTTP/2" 404 6 GET /status code=404 HTTP/2 {pid} '
                        r'\d+\.\d{6} - -', second), second


def test_access_log_as_json_lines(start_server, tmpdir_path):
    log = Path(tmpdir_path, "access.log")
    s = start_server("--access-logfile", str(log), "--access-log-json")
    subprocess.run(["curl", "-sS", "-A", 'agent "quoted"\\', s.url + "/scope?a=b"],
                   capture_output=True, timeout=10, check=True)
    [line] = lines_of(log, 1)
    record = json.loads(line)
    assert set(record) == {"time", "remote_addr", "method", "path", "query", "protocol", "status",
                           "bytes", "duration_us", "referer", "user_agent", "pid"}
    assert (record["remote_addr"], record["method"], record["path"], record["query"]) == \
        ("127.0.0.1", "GET", "/scope", "a=b")
    assert (record["protocol"], record["status"], record["user_agent"]) == ("HTTP/1.1", 200, 'agent "quoted"\\')
    assert record["pid"] in s.workers() and record["bytes"] > 0


def test_error_log_lines_carry_priorities_when_stderr_is_the_journal(start_server, tmpdir_path):
    # What systemd does: stderr is a stream socket, JOURNAL_STREAM names its device and inode.
    reader, writer = socket.socketpair()
    st = os.fstat(writer.fileno())
    s = start_server("--error-logfile", "-", "--log-level", "debug", "--user", "no-such-user-here",
                     env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, wait_ready=False,
                     popen={"stderr": writer})
    writer.close()
    assert s.proc.wait(15) == 3
    reader.settimeout(5)
    text = b""
    while chunk := reader.recv(65536):
        text += chunk
    lines = text.decode().splitlines()
    assert any(re.match(r"<6>\[.*\] \[\d+\] \[INFO\] Starting tricorn", l) for l in lines), lines
    assert any(re.match(r"<3>\[.*\] \[\d+\] \[ERROR\] no such user: no-such-user-here", l) for l in lines), lines
    assert any(l.startswith("<2>") and "[CRITICAL]" in l for l in lines), lines
    assert all(re.match(r"<[2-7]>\[", l) for l in lines), lines


def test_no_priorities_when_stderr_is_not_the_journal(start_server, tmpdir_path):
    s = start_server(env={"JOURNAL_STREAM": "1:1"})
    assert re.match(r"\[\d{4}-", s.log())  # a file, and not the journal's stream


def test_a_log_nobody_reads_does_not_stop_the_worker(start_server, tmpdir_path):
    """The access log is a FIFO nobody reads, so every write to it blocks once 64 KiB
    are waiting. Workers write logs from a thread of their own: the event loop goes on
    serving, lines past 8 MiB waiting are dropped and counted."""
    fifo = Path(tmpdir_path, "access.fifo")
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # so the server can open it
    try:
        # Long lines (4 KiB each), so that the 8 MiB bound is reached within the run
        # even by a slow build (ASan).
        line_size = 4096
        s = start_server("--access-logfile", str(fifo), "--access-logformat",
                         '%(h)s "%(r)s" %(s)s %(b)s ' + "x" * (line_size - 40))
        out = subprocess.run(["wrk", "-t1", "-c8", "-d3s", "--timeout", "2s", s.url + "/"],
                             capture_output=True, text=True, timeout=30).stdout
        served = int(re.search(r"(\d+) requests in", out).group(1))
        assert "Socket errors" not in out, out
        # A worker writing its log itself would have stopped once the pipe was full.
        fits = fcntl.fcntl(reader, 1032) // line_size  # F_GETPIPE_SZ: the pipe's capacity
        assert served > 10 * fits, (served, fits, out)
        # Now read: the writer thread gets going again and reports what it dropped.
        os.set_blocking(reader, True)
        first = os.read(reader, 65536).decode()
        assert first.count("\n") > 10 and '"GET / HTTP/1.1" 200 13 ' in first
        os.set_blocking(reader, False)
        def drain():
            try:
                while os.read(reader, 1 << 20):
                    pass
            except BlockingIOError:
                pass
            return re.search(r"\[WARNING\] \d+ log line\(s\) dropped", s.log())
        wait_until(drain, what="the dropped-lines warning")
    finally:
        os.close(reader)


def threads_of(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def test_the_log_writer_runs_only_while_there_is_something_to_write(start_server, tmpdir_path):
    # A worker that logs nothing is one thread (the kernel then skips reference counting
    # on the descriptors of every system call); its writer ends after a quiet second and
    # comes back with the next line.
    log = Path(tmpdir_path, "access.log")
    s = start_server("-w", "1", "--access-logfile", str(log))
    [worker] = s.wait_workers(1)
    wait_until(lambda: threads_of(worker) == 1, what="the writer to end after the boot lines")
    subprocess.run(["curl", "-sS", "-o", "/dev/null", s.url + "/"], timeout=10, check=True)
    assert len(lines_of(log, 1)) == 1  # written by a writer started for it
    wait_until(lambda: threads_of(worker) == 1, what="the writer to end again")
    subprocess.run(["curl", "-sS", "-o", "/dev/null", s.url + "/scope"], timeout=10, check=True)
    assert lines_of(log, 2)[1].startswith('127.0.0.1 - - [')
