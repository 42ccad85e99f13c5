"""Fixtures that run the real tricorn binary on ephemeral 127.0.0.1 ports.

Readiness is the systemd protocol itself: every server gets a NOTIFY_SOCKET that the
test reads, and "ready" means the master sent READY=1 (all workers booted). Nothing
here sleeps to wait for the server.
"""
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("TRICORN_BUILD", ROOT / "build")).resolve()
TRICORN = BUILD / "tricorn"
TESTAPP = BUILD / "libtestapp.so"
DEADLINE = 15.0  # seconds any single wait may take before the test fails


def wait_until(predicate, timeout=DEADLINE, what="condition"):
    """Polls a condition that has no notification of its own (process exit, /proc)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Notifications:
    """A fake systemd NOTIFY_SOCKET: a datagram socket the master writes to."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []

    def wait_for(self, wanted, timeout=DEADLINE):
        """Returns the first message (from now on or already received but not consumed)
        that contains the line `wanted`."""
        end = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.messages):
                if wanted in m.split("\n"):
                    del self.messages[: i + 1]
                    return m
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {wanted!r} from the master within {timeout}s")
            self.sock.settimeout(left)
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass

    def drain(self):
        self.sock.setblocking(False)
        try:
            while True:
                self.messages.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)
        return list(self.messages)

    def close(self):
        self.sock.close()


class Server:
    def __init__(self, tmp, args, config=None, env=None, app=None, wait_ready=True,
                 executable=None, popen=None):
        tmp = tempfile.mkdtemp(dir=tmp)  # several servers may share a test's directory
        self.tmp = tmp
        self.log_path = os.path.join(tmp, "error.log")
        self.notify = Notifications(tmp)
        self.config_path = None
        cmd = [str(executable or TRICORN), "--error-logfile", self.log_path]
        if config is not None:
            self.config_path = os.path.join(tmp, "tricorn.yaml")
            Path(self.config_path).write_text(config)
            cmd += ["-c", self.config_path]
        if not any(a in ("-b", "--bind") or a.startswith("--bind=") for a in args) and (
            config is None or "bind" not in config
        ):
            cmd += ["-b", "127.0.0.1:0"]
        cmd += list(args)
        if app is not False:  # False: the app comes from the YAML file
            cmd.append(str(app or TESTAPP))
        full_env = dict(os.environ, NOTIFY_SOCKET=self.notify.path)
        full_env.pop("WEB_CONCURRENCY", None)
        full_env.update(env or {})
        options = dict(stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp)
        options.update(popen or {})
        self.proc = subprocess.Popen(cmd, env=full_env, **options)
        self.master_pid = self.proc.pid  # changes after a binary upgrade
        self.port = None
        if wait_ready:
            self.wait_ready()

    def wait_ready(self):
        self.notify.wait_for("READY=1")
        self.port = self.bound_port()
        return self

    def bound_port(self):
        m = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", self.log())
        return int(m.group(1)) if m else None

    def log(self):
        try:
            return Path(self.log_path).read_text()
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=DEADLINE):
        return wait_until(lambda: re.search(pattern, self.log()), timeout, f"log line {pattern!r}")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def workers(self):
        pid = self.master_pid
        try:
            text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        except FileNotFoundError:
            return []
        return sorted(int(p) for p in text.split())

    def wait_workers(self, count, exclude=()):
        return wait_until(
            lambda: (w := self.workers()) and len(w) == count and not set(w) & set(exclude) and w,
            what=f"{count} workers")

    def signal(self, signo):
        os.kill(self.master_pid, signo)

    def stop(self):
        if self.master_pid != self.proc.pid and alive(self.master_pid):
            # A master started by a binary upgrade is not our child: stop it by pid.
            os.kill(self.master_pid, signal.SIGINT)
            try:
                wait_until(lambda: not alive(self.master_pid), 10, "the upgraded master to exit")
            except AssertionError:
                os.kill(self.master_pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.notify.close()


def alive(pid):
    """True while `pid` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.fixture
def tmpdir_path():
    with tempfile.TemporaryDirectory(prefix="tricorn-test-") as d:
        yield d


@pytest.fixture
def start_server(tmpdir_path):
    servers = []

    def start(*args, **kwargs):
        s = Server(tmpdir_path, args, **kwargs)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def server(start_server):
    return start_server("-w", "1")


class Load:
    """wrk keep-alive load against a server for a fixed time, started in the background.
    Bounded: `seconds` long, 127.0.0.1 only."""

    def __init__(self, url, seconds, connections=32, threads=2):
        self.proc = subprocess.Popen(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", url],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.seconds = seconds

    def result(self):
        out, _ = self.proc.communicate(timeout=self.seconds + 30)
        m = re.search(r"(\d+) requests in", out)
        assert m, out
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        return {
            "requests": int(m.group(1)),
            "socket_errors": sum(map(int, errors.groups())) if errors else 0,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "output": out,
        }


def raw_exchange(port, data, read_timeout=5.0, shutdown=False):
    """Sends raw bytes, returns everything received until the server closes (or the
    timeout passes: then the returned flag `closed` is False)."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as s:
        s.sendall(data)
        if shutdown:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        closed = False
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    closed = True
                    break
                chunks.append(b)
        except socket.timeout:
            pass
        except ConnectionResetError:
            closed = True
        return b"".join(chunks), closed


def parse_responses(data):
    """Splits a byte stream into (status, headers, body) tuples (Content-Length or
    chunked framing, as the server sends)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError(f"incomplete response head: {data[:200]!r}")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status == 100:
            out.append((status, headers, b""))
            data = rest
            continue
        if "content-length" in headers:
            n = int(headers["content-length"])
            body, data = rest[:n], rest[n:]
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                if size == 0:
                    _, _, rest = rest.partition(b"\r\n")
                    break
                body += rest[:size]
                rest = rest[size + 2:]
            data = rest
        else:
            body, data = rest, b""
        out.append((status, headers, body))
    return out
