"""ASGI lifespan: startup before a worker reports ready, shutdown when it retires, the
state it sets in every request's scope, and failures that stop a boot or a reload."""
import re
import signal
import subprocess
from pathlib import Path

from conftest import BUILD, wait_until


def get(server, path):
    r = subprocess.run(["curl", "-sS", server.url + path], capture_output=True, timeout=10)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode()


def test_state_set_at_startup_is_in_every_request(start_server):
    s = start_server("-w", "2")
    pids = set(s.workers())
    seen = set()
    for _ in range(40):
        state, pid = get(s, "/state"), get(s, "/pid")
        assert state.startswith("lifespan startup in pid ")
        seen.add(int(state.split()[-1]))
    assert seen <= pids
    # And over HTTP/2 as well.
    r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", s.url + "/state"],
                       capture_output=True, timeout=10)
    assert r.stdout.decode().startswith("lifespan startup in pid ")


def test_ready_waits_for_a_slow_startup(start_server):
    # READY=1 comes only once every worker finished startup (500 ms here): the very
    # first request already sees the state.
    s = start_server("-w", "2", env={"TESTAPP_LIFESPAN": "slow"})
    assert get(s, "/state").startswith("lifespan startup in pid ")


def test_startup_failure_stops_a_first_boot_with_its_message(start_server):
    s = start_server("-w", "2", env={"TESTAPP_LIFESPAN": "fail"}, wait_ready=False)
    assert s.proc.wait(15) == 3
    assert "Application startup failed: database unreachable" in s.log()
    assert "Worker failed to boot: database unreachable" in s.log()


def test_startup_failure_on_reload_keeps_the_old_generation(start_server, tmpdir_path):
    flag = Path(tmpdir_path, "fail-startup")
    s = start_server("-w", "2", env={"TESTAPP_LIFESPAN_FAIL_IF": str(flag)})
    old = s.wait_workers(2)
    flag.write_text("")
    s.signal(signal.SIGHUP)
    s.wait_log(r"Reload failed, keeping generation 1: a new worker failed to boot: database unreachable")
    s.notify.wait_for("READY=1")
    wait_until(lambda: s.workers() == old, what="only the old workers to remain")
    assert get(s, "/") == "Hello, World!"
    flag.unlink()
    s.signal(signal.SIGHUP)
    s.wait_workers(2, exclude=old)


def test_shutdown_runs_when_workers_retire(start_server, tmpdir_path):
    record = Path(tmpdir_path, "shutdowns")
    s = start_server("-w", "2", env={"TESTAPP_SHUTDOWN_FILE": str(record)})
    first = s.wait_workers(2)
    s.signal(signal.SIGHUP)  # the first generation retires
    second = s.wait_workers(2, exclude=first)
    wait_until(lambda: record.exists() and len(record.read_text().split("\n")) == 3,
               what="two shutdown lines")
    assert sorted(record.read_text().split()) == sorted(["shutdown"] * 2 + [str(p) for p in first])
    s.signal(signal.SIGTERM)
    assert s.proc.wait(15) == 0
    lines = record.read_text().splitlines()
    assert sorted(lines[2:]) == sorted(f"shutdown {p}" for p in second)


def test_app_without_lifespan_is_fine(start_server):
    s = start_server(env={"TESTAPP_LIFESPAN": "unsupported"})
    assert get(s, "/state") == "no state"
    s.wait_log(re.escape("ASGI 'lifespan' protocol appears unsupported (scope type not supported by the app)"))  # worker lines reach the log within 100 ms
    # The hello example does not implement lifespan at all.
    h = start_server(app=BUILD / "libhello.so")
    assert get(h, "/") == "Hello, World!"


def test_lifespan_on_requires_it(start_server):
    s = start_server("--lifespan", "on", env={"TESTAPP_LIFESPAN": "unsupported"}, wait_ready=False)
    assert s.proc.wait(15) == 3
    assert "lifespan startup failed: scope type not supported by the app" in s.log()


def test_lifespan_off_skips_it(start_server):
    s = start_server("--lifespan", "off")
    assert get(s, "/state") == "no state"
