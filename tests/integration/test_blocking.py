"""Blocking handlers (TRICORN_SYNC_APP) on the worker's thread pool: they never hold
up the event loop, so other requests of the same worker keep being answered."""
import re
import concurrent.futures
import subprocess
import time

from conftest import BUILD

BLOCKING = BUILD / "libblocking.so"


def get(url, *extra):
    r = subprocess.run(["curl", "-sS", "--fail-with-body", *extra, url], capture_output=True,
                       timeout=30)
    return r.returncode, r.stdout.decode()


def test_sleeping_handlers_run_side_by_side_while_others_are_answered(start_server):
    s = start_server("-w", "1", "--threads", "9", app=BLOCKING)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        sleeps = [pool.submit(get, s.url + "/sleep?ms=1000") for _ in range(8)]
        fast = []
        while not any(f.done() for f in sleeps):
            fast.append(get(s.url + "/fast"))
        results = [f.result() for f in sleeps]
    assert all(code == 0 for code, _ in results), results
    spans = [tuple(map(int, body.split())) for _, body in results]
    starts, ends = [a for a, _ in spans], [b for _, b in spans]
    # All eight slept at once: the last to start began before the first one ended.
    assert max(starts) < min(ends)
    # And while all eight slept, the same worker kept answering.
    answered = [int(body) for code, body in fast if code == 0]
    assert any(max(starts) < t < min(ends) for t in answered), (starts, ends, answered)


def test_request_body_is_streamed_to_the_handler(start_server, tmpdir_path):
    s = start_server(app=BLOCKING)
    payload = bytes(range(256)) * 4096  # 1 MiB
    r = subprocess.run(["curl", "-sS", "--data-binary", "@-", "-H", "Content-Type: application/octet-stream",
                        s.url + "/echo"], input=payload, capture_output=True, timeout=30)
    assert r.stdout == payload
    r = subprocess.run(["curl", "-sS", "-H", "Transfer-Encoding: chunked", "--data-binary", "@-",
                        s.url + "/echo"], input=b"chunked body", capture_output=True, timeout=30)
    assert r.stdout == b"chunked body"


def test_handler_exception_is_a_500_and_the_worker_serves_on(start_server):
    s = start_server(app=BLOCKING)
    assert get(s.url + "/throw") == (22, "500 Internal Server Error\n")
    s.wait_log(re.escape("the blocking handler failed on purpose"))  # worker lines reach the log within 100 ms
    code, body = get(s.url + "/fast")
    assert code == 0 and int(body) > 0


def test_blocking_handler_over_http2(start_server):
    s = start_server(app=BLOCKING)
    code, body = get(s.url + "/fast", "--http2-prior-knowledge")
    assert code == 0 and int(body) > 0
    r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--data-binary", "h2 body",
                        s.url + "/echo"], capture_output=True, timeout=30)
    assert r.stdout == b"h2 body"
