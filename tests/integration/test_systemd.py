"""The systemd side: units that systemd-analyze accepts, and the sd_notify protocol as
a fake NOTIFY_SOCKET records it."""
import re
import shutil
import socket
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, TRICORN, wait_until

UNITS = sorted((ROOT / "systemd").glob("tricorn*"))


def test_the_units_we_ship():
    assert [u.name for u in UNITS] == [
        "tricorn-notify-reload.service", "tricorn.service", "tricorn.socket"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_units_pass_systemd_analyze_verify(unit, tmpdir_path):
    # Point ExecStart at the binary we built and the working directory at one that exists.
    text = unit.read_text().replace("/usr/local/bin/tricorn", str(TRICORN))
    text = text.replace("/srv/app", tmpdir_path)
    copy = Path(tmpdir_path, unit.name)
    copy.write_text(text)
    if unit.suffix == ".socket":
        Path(tmpdir_path, "tricorn.service").write_text(
            (ROOT / "systemd/tricorn.service").read_text()
            .replace("/usr/local/bin/tricorn", str(TRICORN)).replace("/srv/app", tmpdir_path))
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)],
                         capture_output=True, text=True, cwd=tmpdir_path)
    # Debian 12's systemd 252 predates Type=notify-reload and ReloadSignal= (253): those
    # two lines, and only those, are expected from the 253+ variant.
    problems = [l for l in out.stderr.splitlines() if l and not (
        unit.name == "tricorn-notify-reload.service" and (
            "Unknown key 'ReloadSignal'" in l or
            "Failed to parse service type, ignoring: notify-reload" in l))]
    assert out.returncode == 0 or not problems, out.stderr
    assert problems == [], out.stderr
    assert "KillMode=mixed" in text or unit.suffix == ".socket"
    assert "NotifyAccess=all" in text or unit.suffix == ".socket"


def test_notify_sequence_start_reload_stop(start_server):
    s = start_server("-w", "2")  # returns once READY=1 arrived
    s.notify.wait_for("STATUS=generation 1, 2 worker(s)")
    s.signal(signal.SIGHUP)
    reloading = s.notify.wait_for("RELOADING=1")
    assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", reloading)
    assert s.notify.wait_for("READY=1") == "READY=1"
    s.notify.wait_for("STATUS=generation 2, 2 worker(s)")
    s.signal(signal.SIGTERM)
    s.notify.wait_for("STOPPING=1")
    assert s.proc.wait(10) == 0
    assert s.notify.drain()[-1] == "STATUS=stopped"


def test_failed_reload_still_reports_ready(start_server):
    s = start_server(config="workers: 1\nbind: '127.0.0.1:0'\n")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    Path(s.config_path).write_text(f"workers: 1\nbind: ['127.0.0.1:0', '127.0.0.1:{port}']\n")
    s.signal(signal.SIGHUP)
    s.notify.wait_for("RELOADING=1")
    assert s.notify.wait_for("READY=1") == "READY=1"
    s.wait_log(rf"Reload failed, keeping the running configuration: cannot listen on 127\.0\.0\.1:{port}: bind: Address already in use")
    taken.close()


def test_watchdog_pings_at_half_the_interval(start_server):
    s = start_server("-w", "1", env={"WATCHDOG_USEC": "400000"})
    for _ in range(3):
        s.notify.wait_for("WATCHDOG=1", timeout=2)


def test_usr1_reopens_the_logs(start_server, tmpdir_path):
    access = Path(tmpdir_path, "access.log")
    s = start_server("--access-logfile", str(access))
    rotated = Path(tmpdir_path, "access.log.1")
    shutil.move(Path(s.log_path), Path(s.log_path + ".1"))
    subprocess.run(["curl", "-s", s.url + "/"], check=True, capture_output=True)
    wait_until(lambda: access.exists() and access.read_text(), what="a first access line")
    shutil.move(access, rotated)
    s.signal(signal.SIGUSR1)
    wait_until(lambda: Path(s.log_path).exists(), what="the error log to be reopened")
    assert "Handling signal: usr1" in Path(s.log_path + ".1").read_text() + s.log()
    # Workers reopen too: the next request is logged to the new access log.
    def logged_anew():
        subprocess.run(["curl", "-s", s.url + "/"], check=True, capture_output=True)
        return access.exists() and access.read_text()
    wait_until(logged_anew, what="the access log to be reopened by the worker")
    assert len(rotated.read_text().splitlines()) == 1
