"""Hardening: body limits, the per-worker connection cap, least privilege."""
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from conftest import TESTAPP, parse_responses, raw_exchange
from h2frames import RawH2, body_of, ends, status_of


def proc_status(pid):
    return dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())


def test_body_over_limit_with_content_length_gets_413(start_server):
    s = start_server("--limit-request-body", "1000")
    data, closed = raw_exchange(s.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n"
                                + b"x" * 1001)
    assert data.startswith(b"HTTP/1.1 413 Content Too Large\r\n")
    assert closed
    data, _ = raw_exchange(s.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                           b"Connection: close\r\n\r\n" + b"y" * 1000)
    [(status, _, body)] = parse_responses(data)
    assert (status, body) == (200, b"y" * 1000)


def test_body_over_limit_is_refused_before_100_continue(start_server):
    s = start_server("--limit-request-body", "1000")
    data, closed = raw_exchange(s.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                                b"Expect: 100-continue\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 413 ")  # and no 100 Continue before it
    assert closed


def test_chunked_body_over_limit_gets_413(start_server):
    s = start_server("--limit-request-body", "1000")
    chunks = b"".join(b"200\r\n" + b"z" * 0x200 + b"\r\n" for _ in range(3)) + b"0\r\n\r\n"
    data, closed = raw_exchange(s.port, b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                                b"Transfer-Encoding: chunked\r\n\r\n" + chunks)
    assert data.startswith(b"HTTP/1.1 413 ")
    assert closed


def test_http2_body_over_limit_gets_413(start_server):
    s = start_server("--limit-request-body", "1000")
    c = RawH2(s.port)
    c.send(c.request(1, "/echo", "POST", end_stream=False, extra=[("content-length", "5000")]))
    assert status_of(c.frames(ends(1)), 1) == 413
    c.send(c.request(3, "/echo", "POST", end_stream=False), c.data(3, b"a" * 800),
           c.data(3, b"b" * 800, end_stream=True))
    assert status_of(c.frames(ends(3)), 3) == 413
    c.send(c.request(5, "/echo", "POST", end_stream=False), c.data(5, b"ok", end_stream=True))
    assert body_of(c.frames(ends(5)), 5) == b"ok"


def test_worker_stops_accepting_at_worker_connections(start_server):
    s = start_server("-w", "1", "--worker-connections", "2", "--keep-alive", "30")
    held = []
    for _ in range(2):
        c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.recv(4096).endswith(b"Hello, World!")
        held.append(c)
    third = socket.create_connection(("127.0.0.1", s.port), timeout=1)
    third.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    try:
        third.recv(4096)
        raise AssertionError("the third connection was served above worker_connections")
    except socket.timeout:
        pass  # queued in the listening socket, not refused
    held.pop().close()  # below the cap: the worker accepts again
    third.settimeout(5)
    data = b""
    while not data.endswith(b"Hello, World!"):
        chunk = third.recv(4096)
        assert chunk
        data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK")


def test_workers_drop_privileges(start_server, tmpdir_path):
    # Workers load the app after dropping privileges: give nobody a copy it can reach
    # (the checkout may sit in a directory only root can enter, as /root does).
    shared = Path(tempfile.mkdtemp(prefix="tricorn-nobody-"))
    shared.chmod(0o755)
    app = shared / "libtestapp.so"
    shutil.copy(TESTAPP, app)
    app.chmod(0o755)
    s = start_server("-w", "2", "--user", "nobody", "--group", "nogroup", "--umask", "027",
                     app=app)
    workers = s.wait_workers(2)
    for pid in workers:
        st = proc_status(pid)
        assert st["Uid"].split() == ["65534"] * 4
        assert st["Gid"].split() == ["65534"] * 4
        assert st["Groups"].strip() == ""
        assert st["Umask"].strip() == "0027"
    assert proc_status(s.proc.pid)["Uid"].split()[0] == "0"  # the master keeps root
    assert "Workers will run as root" not in s.log()
    out = subprocess.run(["curl", "-sS", s.url + "/"], capture_output=True, timeout=10).stdout
    assert out == b"Hello, World!"
    shutil.rmtree(shared)


def test_running_workers_as_root_is_warned_about(start_server):
    s = start_server("-w", "1")
    assert "Workers will run as root: set user and group to drop privileges" in s.log()


def test_unknown_user_fails_the_boot(start_server):
    s = start_server("--user", "no-such-user-here", wait_ready=False)
    assert s.proc.wait(15) == 3
    assert "Worker failed to boot: no such user: no-such-user-here" in s.log()


def unix_get(path, as_nobody=False):
    """GET / over a unix socket with curl, as root or as nobody; returns (exit code, body)."""
    cmd = ["curl", "-sS", "--unix-socket", str(path), "http://x/"]
    if as_nobody:
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + cmd
    r = subprocess.run(cmd, capture_output=True, timeout=10)
    return r.returncode, r.stdout


def test_unix_socket_gets_the_configured_mode_and_owner(start_server):
    where = Path(tempfile.mkdtemp(prefix="tricorn-unix-"))
    where.chmod(0o755)
    path = where / "app.sock"
    s = start_server("-b", f"unix:{path}", "--unix-socket-mode", "0660",
                     "--unix-socket-owner", "nobody:nogroup")
    st = path.stat()
    assert (oct(st.st_mode & 0o777), st.st_uid, st.st_gid) == ("0o660", 65534, 65534)
    assert unix_get(path) == (0, b"Hello, World!")  # root may always connect
    s.stop()
    assert not path.exists()  # removed at exit
    shutil.rmtree(where)


def test_unix_socket_mode_keeps_other_users_out(start_server):
    where = Path(tempfile.mkdtemp(prefix="tricorn-unix-"))
    where.chmod(0o755)
    closed, open_ = where / "closed.sock", where / "open.sock"
    start_server("-b", f"unix:{closed}", "--unix-socket-mode", "0600")
    start_server("-b", f"unix:{open_}")  # the default, 0666
    assert oct(closed.stat().st_mode & 0o777) == "0o600"
    assert oct(open_.stat().st_mode & 0o777) == "0o666"
    code, body = unix_get(closed, as_nobody=True)
    assert (code, body) == (7, b"")  # curl: couldn't connect (EACCES)
    assert unix_get(open_, as_nobody=True) == (0, b"Hello, World!")
    shutil.rmtree(where)


def test_unix_socket_belongs_to_the_workers_user_by_default(start_server):
    where = Path(tempfile.mkdtemp(prefix="tricorn-unix-"))
    where.chmod(0o755)
    shared = Path(tempfile.mkdtemp(prefix="tricorn-nobody-"))
    shared.chmod(0o755)
    app = shared / "libtestapp.so"
    shutil.copy(TESTAPP, app)
    app.chmod(0o755)
    path = where / "app.sock"
    start_server("-b", f"unix:{path}", "--user", "nobody", "--group", "nogroup", app=app)
    st = path.stat()
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    assert unix_get(path, as_nobody=True) == (0, b"Hello, World!")
    shutil.rmtree(where)
    shutil.rmtree(shared)


def test_unknown_unix_socket_owner_is_a_bind_error(start_server, tmpdir_path):
    s = start_server("-b", f"unix:{tmpdir_path}/x.sock", "--unix-socket-owner", "no-such-user-here",
                     wait_ready=False)
    assert s.proc.wait(15) == 1
    assert "no such user: no-such-user-here" in s.log()
