#!/usr/bin/python3
"""tricorn's benchmark suite: every case against every server, in one run, on this
machine, 127.0.0.1 only. Servers run pinned to CPU 0 and the load generator to CPU 1.
The figure to compare is the server's own CPU time per request (user + system of its
whole process tree, from /proc), which does not depend on which side was the
bottleneck. Prints a markdown table. Never part of the tests: run it by hand
(scripts/bench/run.sh)."""
import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TICK = os.sysconf("SC_CLK_TCK")
BODY = "Hello, World!"


def wait_port(port, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def tree(pid):
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except FileNotFoundError:
            kids = []
        todo += [int(k) for k in kids]
    return out


def cpu_seconds(pid):
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (FileNotFoundError, IndexError):
            pass
    return total / TICK


def rss_bytes(pid):
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except FileNotFoundError:
            pass
    return total


class Server:
    def __init__(self, name, cmd, port, h2_port=None, env=None, cwd=None, echo_path=None):
        self.name, self.port, self.h2_port = name, port, h2_port
        # The 1 MiB echo case: a path on this server, or a server of its own.
        self.echo_path, self.echo_port, self.echo_server = echo_path, None, None
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(["taskset", "-c", "0"] + cmd, env=env, cwd=cwd,
                                     stdout=self.log, stderr=self.log, start_new_session=True)
        try:
            wait_port(port)
        except RuntimeError:
            self.log.seek(0)
            raise RuntimeError(f"{name} did not start: {self.log.read().decode()[-2000:]}")
        if h2_port:
            wait_port(h2_port)
        time.sleep(0.5)  # let every worker finish booting before measuring

    def stop(self):
        if self.echo_server:
            self.echo_server.stop()
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)


def run_load(cmd):
    r = subprocess.run(["taskset", "-c", "1"] + cmd, capture_output=True, text=True, timeout=300)
    return r.stdout + r.stderr


def parse_wrk(out):
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1, "ms": 1000, "s": 1e6}
    p99_us = float(p99.group(1)) * scale[p99.group(2)] if p99 else None
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    err = (sum(map(int, errors.groups())) if errors else 0) + (int(non2xx.group(1)) if non2xx else 0)
    mbps = re.search(r"Transfer/sec:\s+([\d.]+)(KB|MB|GB)", out)
    return reqs, rps, p99_us, err, mbps


def parse_h2load(out, log):
    m = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    rps = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out).group(1))
    lat = sorted(int(line.split()[2]) for line in Path(log).read_text().splitlines() if line.strip())
    p99 = lat[int(len(lat) * 0.99)] if lat else None
    return int(m.group(2)), rps, p99, int(m.group(3)) + int(m.group(4))


def measure(server, load_cmd, kind="wrk"):
    before = cpu_seconds(server.proc.pid)
    if kind == "wrk":
        out = run_load(load_cmd)
        reqs, rps, p99, err, _ = parse_wrk(out)
    else:
        log = tempfile.mktemp(suffix=".h2log")
        out = run_load(load_cmd + ["--log-file", log])
        reqs, rps, p99, err = parse_h2load(out, log)
        os.unlink(log)
    cpu = cpu_seconds(server.proc.pid) - before
    return {"rps": rps, "p99_us": p99, "cpu_us": cpu * 1e6 / max(reqs, 1), "errors": err, "out": out}


def open_idle(port, count, h2):
    """Opens `count` idle keep-alive connections (each after one request, or after the
    HTTP/2 preface and SETTINGS), and returns them."""
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        if h2:
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        else:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        socks.append(s)
    end = time.monotonic() + 10
    for s in socks:
        s.settimeout(max(0.01, end - time.monotonic()))
        try:
            s.recv(65536)
        except OSError:
            pass
    time.sleep(1)
    return socks


def with_echo(server, echo):
    server.echo_server, server.echo_port, server.echo_path = echo, echo.port, "/echo"
    return server


def start_servers(tmp, which, build):
    htdocs = Path(tmp, "htdocs")
    htdocs.mkdir(exist_ok=True)
    (htdocs / "index.html").write_text(BODY)
    servers = {}
    if "bare" in which:
        servers["bare epoll loop"] = lambda: Server("bare", [str(Path(tmp, "bare")), "8090"], 8090)
    if "tricorn" in which:
        servers["tricorn"] = lambda: Server(
            "tricorn", [str(build / "tricorn"), "-w", "1", "-b", "127.0.0.1:8091", "--keep-alive", "75",
                        "--backlog", "4096", "--worker-connections", "20000",
                        str(build / "libhello.so")], 8091, h2_port=8091)
        servers["tricorn"] = lambda hello=servers["tricorn"]: with_echo(hello(), Server(
            "tricorn-echo", [str(build / "tricorn"), "-w", "1", "-b", "127.0.0.1:8098",
                             str(build / "libecho.so")], 8098))
    if "h2o" in which:
        conf = Path(tmp, "h2o.conf")
        conf.write_text(f"""num-threads: 1
max-connections: 20000
listen:
  port: 8092
  host: 127.0.0.1
http2-idle-timeout: 75
hosts:
  default:
    paths:
      /:
        file.dir: {htdocs}
access-log: /dev/null
error-log: {tmp}/h2o-error.log
""")
        servers["h2o 2.2"] = lambda conf=conf: Server("h2o", ["h2o", "-c", str(conf)], 8092,
                                                       h2_port=8092)
    if "nginx" in which:
        conf = Path(tmp, "nginx.conf")
        conf.write_text(f"""worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 75;
  server {{ listen 127.0.0.1:8093 backlog=4096; location / {{ return 200 "{BODY}"; }} }}
  server {{ listen 127.0.0.1:8094 http2; location / {{ return 200 "{BODY}"; }} }}
}}
""")
        servers["nginx 1.22"] = lambda conf=conf: Server("nginx", ["nginx", "-c", str(conf)], 8093,
                                                         h2_port=8094)
    if "nghttpd" in which:
        servers["nghttpd 1.52"] = lambda: Server(
            "nghttpd", ["nghttpd", "--no-tls", "-d", str(htdocs), "8095"], 8095, h2_port=8095)
    if "uvicorn" in which:
        servers["Uvicorn 0.17"] = lambda: Server(
            "uvicorn", ["/usr/bin/python3", "-m", "uvicorn", "--workers", "1", "--loop", "uvloop", "--http",
                        "httptools", "--no-access-log", "--log-level", "warning", "--port", "8096",
                        "--timeout-keep-alive", "75", "uvicorn_app:app"], 8096, cwd=str(HERE),
            echo_path="/echo")
    return servers


CASES = ["keep-alive", "pipelined", "new conn", "h2c", "post 1MiB"]


def case_command(case, name, server, seconds):
    """The load for one case against one server, or None where the server has no such
    case (nghttpd speaks HTTP/2 only; the bare loop has no HTTP/2; only tricorn and
    Uvicorn have an echo app)."""
    url = f"http://127.0.0.1:{server.port}/"
    d = f"{seconds}s"
    if name == "nghttpd 1.52" and case != "h2c":
        return None
    if case == "keep-alive":
        return ["wrk", "-t1", "-c64", f"-d{d}", "--latency", url]
    if case == "pipelined":
        return ["wrk", "-t1", "-c64", f"-d{d}", "--latency", "-s", str(HERE / "pipeline.lua"), url]
    if case == "new conn":
        return ["wrk", "-t1", "-c16", f"-d{d}", "--latency", "-H", "Connection: close", url]
    if case == "h2c":
        if not server.h2_port:
            return None
        return ["h2load", "-c16", "-m16", "-D", str(seconds), f"http://127.0.0.1:{server.h2_port}/"]
    if case == "post 1MiB":
        if not server.echo_path:
            return None
        return ["wrk", "-t1", "-c4", f"-d{d}", "--latency", "-s", str(HERE / "post1m.lua"),
                f"http://127.0.0.1:{server.echo_port or server.port}{server.echo_path}"]
    raise ValueError(case)


def run_case(case, name, server, seconds):
    cmd = case_command(case, name, server, seconds)
    if cmd is None:
        return None
    target = server.echo_server if case == "post 1MiB" and server.echo_server else server
    r = measure(target, cmd, "h2load" if case == "h2c" else "wrk")
    if case == "post 1MiB":
        r["mbps"] = r["rps"] * 1.048576
    return r


def median_result(runs):
    """The run with the median CPU per request (its other figures come along)."""
    runs = sorted(runs, key=lambda r: r["cpu_us"])
    return dict(runs[len(runs) // 2], spread=(runs[0]["cpu_us"], runs[-1]["cpu_us"]))


def fmt_cell(r):
    if not r:
        return "n/a"
    p99 = f"{r['p99_us'] / 1000:.2f} ms" if r.get("p99_us") is not None else "-"
    err = f", {r['errors']} err" if r["errors"] else ""
    if "mbps" in r:
        return f"{r['mbps']:.0f} MB/s ({r['cpu_us']:.0f} us/req, p99 {p99}{err})"
    return f"{r['cpu_us']:.2f} us ({r['rps'] / 1000:.0f}k/s, p99 {p99}{err})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build-release"))
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3,
                    help="each case runs this many times for every server, interleaved; "
                         "the table shows the median")
    ap.add_argument("--servers", default="bare,tricorn,h2o,nginx,nghttpd,uvicorn")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    build = Path(args.build)
    which = args.servers.split(",")
    cases = args.cases.split(",")
    with tempfile.TemporaryDirectory(prefix="tricorn-bench-") as tmp:
        os.chmod(tmp, 0o755)  # h2o started as root serves files as nobody
        subprocess.run(["gcc", "-O2", "-o", str(Path(tmp, "bare")), str(HERE / "bare.c")], check=True)
        # Every server runs for the whole benchmark (idle ones cost nothing) and the
        # servers take turns within each case and round: the host's slow minutes then
        # fall on all of them alike, and the median of the rounds is what is compared.
        servers = {}
        try:
            for name, start in start_servers(tmp, which, build).items():
                servers[name] = start()
            memory = {name: {"idle": rss_bytes(s.proc.pid)} for name, s in servers.items()}
            runs = {name: {} for name in servers}
            for round_ in range(args.rounds):
                for case in cases:
                    for name, server in servers.items():
                        r = run_case(case, name, server, args.seconds)
                        if r is None:
                            continue
                        runs[name].setdefault(case, []).append(r)
                        print(f"# round {round_ + 1} {case} {name}: {r['cpu_us']:.2f} us/req "
                              f"{r['rps']:.0f}/s {r['errors']} err", file=sys.stderr, flush=True)
            results = {name: {c: median_result(rs) for c, rs in by_case.items()}
                       for name, by_case in runs.items()}
            if not args.skip_memory:
                for name, server in servers.items():
                    if name != "bare epoll loop":
                        memory[name].update(measure_memory(server))
        finally:
            for server in servers.values():
                server.stop()
        balance = measure_balance(build, args.seconds) if "tricorn" in which else None
        print_table(results, runs, memory if not args.skip_memory else {}, balance, args)


def measure_memory(server):
    idle = rss_bytes(server.proc.pid)
    socks = open_idle(server.port, 8000, False)
    h1 = (rss_bytes(server.proc.pid) - idle) / len(socks)
    for s in socks:
        s.close()
    time.sleep(2)
    h2 = None
    if server.h2_port:
        base = rss_bytes(server.proc.pid)
        socks = open_idle(server.h2_port, 4000, True)
        h2 = (rss_bytes(server.proc.pid) - base) / len(socks)
        for s in socks:
            s.close()
    return {"idle": idle, "h1": h1, "h2": h2}


def measure_balance(build, seconds):
    """Two tricorn workers, new connection per request: each worker's share."""
    s = Server("tricorn2", [str(build / "tricorn"), "-w", "2", "-b", "127.0.0.1:8097",
                            str(build / "libtestapp.so")], 8097)
    try:
        out = run_load(["wrk", "-t1", "-c16", f"-d{seconds}s", "-H", "Connection: close", "-s",
                        str(HERE / "pids.lua"), "http://127.0.0.1:8097/pid"])
    finally:
        s.stop()
    counts = [int(n) for n in re.findall(r"PID \d+ (\d+)", out)]
    total = sum(counts) or 1
    return sorted((c / total for c in counts), reverse=True)


def ratio_row(runs, case, base):
    """Each server's CPU per request in `case` as a multiple of `base`'s, taken within
    each round (the servers of a round ran minutes apart at most, so a slow spell of
    the host falls on both) and then the median of the rounds, with their range."""
    b = runs.get(base, {}).get(case)
    if not b:
        return None
    cells = []
    for name, by_case in runs.items():
        if name == base or not by_case.get(case):
            continue
        ratios = sorted(r["cpu_us"] / rb["cpu_us"] for r, rb in zip(by_case[case], b))
        cells.append(f"{name} {statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})")
    return f"| {case} | {base} | " + ", ".join(cells) + " |"


def print_table(results, runs, memory, balance, args):
    print(f"\n## Server CPU per request (lower is better): median of {args.rounds} interleaved "
          f"rounds of {args.seconds} s, server on CPU 0, load on CPU 1\n")
    print("| server | " + " | ".join(CASES) + " |")
    print("| --- | " + " | ".join("---" for _ in CASES) + " |")
    for name, res in results.items():
        print(f"| {name} | " + " | ".join(fmt_cell(res.get(c)) for c in CASES) + " |")
    print("\n## Ratios (same run: the median of the rounds' ratios, and their range)\n")
    print("| case | against | CPU per request as a multiple |")
    print("| --- | --- | --- |")
    for case, base in [("keep-alive", "bare epoll loop"), ("pipelined", "bare epoll loop"),
                       ("new conn", "h2o 2.2"), ("h2c", "h2o 2.2")]:
        if row := ratio_row(runs, case, base):
            print(row)
    print("\nSpread of the rounds (min-max us/req): " + "; ".join(
        f"{name} {case} {r['spread'][0]:.2f}-{r['spread'][1]:.2f}"
        for name, res in results.items() for case, r in res.items()))
    if memory:
        print("\n## Memory (userspace RSS of the process tree; idle: after start, before load)\n")
        print("| server | idle | per idle HTTP/1.1 conn (8,000) | per idle HTTP/2 conn (4,000) |")
        print("| --- | --- | --- | --- |")
        kib = lambda v: f"{v / 1024:.2f} KiB" if v is not None else "n/a"
        for name, m in memory.items():
            print(f"| {name} | {m['idle'] / 1e6:.1f} MB | {kib(m.get('h1'))} | {kib(m.get('h2'))} |")
    if balance:
        print("\n## Accept balance, tricorn with 2 workers, new connection per request\n")
        print("shares: " + ", ".join(f"{b:.1%}" for b in balance))


if __name__ == "__main__":
    main()
