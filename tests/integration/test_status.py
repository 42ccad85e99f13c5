"""`tricorn status`, `tricorn reload` and `tricorn stop`: the real binary as a client of
the master's control socket, with exit codes that tell what happened."""
import os
import re
import stat
import subprocess
from pathlib import Path

from conftest import TRICORN, wait_until


def tricorn(*args):
    r = subprocess.run([str(TRICORN), *args], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def test_status_lists_every_worker(start_server, tmpdir_path):
    sock = f"{tmpdir_path}/control.sock"
    s = start_server("-w", "2", "--control-socket", sock)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    subprocess.run(["curl", "-sS", "-o", "/dev/null", s.url + "/", s.url + "/"], check=True, timeout=10)
    code, out, _ = tricorn("status", "--control-socket", sock)
    assert code == 0
    lines = out.splitlines()
    assert re.fullmatch(rf"tricorn [\d.]+, master {s.master_pid}, generation 1, 2 worker\(s\), running",
                        lines[0])
    assert lines[1].split() == ["PID", "GEN", "AGE", "STATE", "CONNS", "REQUESTS", "HEARTBEAT"]
    rows = [l.split() for l in lines[2:]]
    assert sorted(int(r[0]) for r in rows) == s.workers()
    assert all(r[1] == "1" and r[3] == "ready" and re.fullmatch(r"\d+:\d\d:\d\d", r[2]) for r in rows)
    assert sum(int(r[5]) for r in rows) == 2  # the two requests above


def test_reload_waits_for_the_outcome(start_server, tmpdir_path):
    sock = f"{tmpdir_path}/control.sock"
    s = start_server(config=f"workers: 2\ncontrol_socket: {sock}\n")
    old = s.wait_workers(2)
    code, out, _ = tricorn("reload", "-c", s.config_path)
    assert (code, out) == (0, "reloaded: generation 2 serving with 2 worker(s)\n")
    new = s.wait_workers(2, exclude=old)
    Path(s.config_path).write_text(f"workers: 2\ncontrol_socket: {sock}\nbogus: 1\n")
    code, out, _ = tricorn("reload", "--control-socket", sock)
    assert code == 1
    assert re.fullmatch(r"reload failed: keeping the running configuration: .*tricorn\.yaml:3: "
                        r"key 'bogus': unknown setting\n", out), out
    assert s.workers() == new


def test_stop_returns_once_the_master_is_gone(start_server, tmpdir_path):
    sock = f"{tmpdir_path}/control.sock"
    s = start_server("-w", "2", "--control-socket", sock)
    code, out, _ = tricorn("stop", "--control-socket", sock)
    assert (code, out) == (0, "stopped\n")
    assert s.proc.wait(5) == 0
    assert not Path(sock).exists()


def test_no_master_and_bad_usage(tmpdir_path):
    code, _, err = tricorn("status", "--control-socket", f"{tmpdir_path}/nothing.sock")
    assert code == 3 and "no master at" in err
    code, _, err = tricorn("status")
    assert code == 2 and "no control socket" in err
    code, _, err = tricorn("reload", "--bogus")
    assert code == 2 and err.startswith("usage: tricorn reload")


def test_unknown_command_on_the_socket(start_server, tmpdir_path):
    import socket
    sock = f"{tmpdir_path}/control.sock"
    start_server("--control-socket", sock)
    with socket.socket(socket.AF_UNIX) as c:
        c.connect(sock)
        c.sendall(b"dance\n")
        assert c.recv(4096) == b"error: unknown command 'dance' (status, reload, stop)\n"
