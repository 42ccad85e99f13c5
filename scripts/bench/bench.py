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
    def __init__(self, name, cmd, port, h2_port=None, env=None, cwd=None):
        self.name, self.port, self.h2_port = name, port, h2_port
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
                        "--timeout-keep-alive", "75", "uvicorn_app:app"], 8096, cwd=str(HERE))
    return servers


CASES = ["keep-alive", "pipelined", "new conn", "h2c", "post 1MiB"]


def run_cases(name, server, seconds):
    url = f"http://127.0.0.1:{server.port}/"
    h2url = f"http://127.0.0.1:{server.h2_port}/" if server.h2_port else None
    d = f"{seconds}s"
    res = {}
    if name == "nghttpd 1.52":  # HTTP/2 only
        res["h2c"] = measure(server, ["h2load", "-c16", "-m16", "-D", str(seconds), h2url], "h2load")
        return res
    res["keep-alive"] = measure(server, ["wrk", "-t1", "-c64", f"-d{d}", "--latency", url])
    res["pipelined"] = measure(server, ["wrk", "-t1", "-c64", f"-d{d}", "--latency", "-s",
                                        str(HERE / "pipeline.lua"), url])
    res["new conn"] = measure(server, ["wrk", "-t1", "-c16", f"-d{d}", "--latency", "-H",
                                       "Connection: close", url])
    if h2url and name not in ("bare epoll loop",):
        res["h2c"] = measure(server, ["h2load", "-c16", "-m16", "-D", str(seconds), h2url], "h2load")
    if name == "Uvicorn 0.17":
        res["post 1MiB"] = measure_post(server, f"http://127.0.0.1:{server.port}/echo", seconds)
    return res


def measure_post(server, url, seconds):
    """1 MiB POSTs echoed back; the figure is MB/s of request body."""
    r = measure(server, ["wrk", "-t1", "-c4", f"-d{seconds}s", "--latency", "-s",
                         str(HERE / "post1m.lua"), url])
    r["mbps"] = r["rps"] * 1.048576
    return r


def measure_tricorn_post(build, seconds):
    s = Server("tricorn-echo", [str(build / "tricorn"), "-w", "1", "-b", "127.0.0.1:8098",
                                str(build / "libecho.so")], 8098)
    try:
        return measure_post(s, "http://127.0.0.1:8098/echo", seconds)
    finally:
        s.stop()


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
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--servers", default="bare,tricorn,h2o,nginx,nghttpd,uvicorn")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    build = Path(args.build)
    which = args.servers.split(",")
    with tempfile.TemporaryDirectory(prefix="tricorn-bench-") as tmp:
        os.chmod(tmp, 0o755)  # h2o started as root serves files as nobody
        subprocess.run(["gcc", "-O2", "-o", str(Path(tmp, "bare")), str(HERE / "bare.c")], check=True)
        results, memory = {}, {}
        for name, start in start_servers(tmp, which, build).items():
            print(f"# {name} ...", file=sys.stderr, flush=True)
            server = start()
            try:
                results[name] = run_cases(name, server, args.seconds)
                if name == "tricorn":
                    results[name]["post 1MiB"] = measure_tricorn_post(build, args.seconds)
                if not args.skip_memory and name != "bare epoll loop":
                    memory[name] = measure_memory(server)
            finally:
                server.stop()
        if "tricorn" in which:
            balance = measure_balance(build, args.seconds)
        print_table(results, memory, balance if "tricorn" in which else None, args)


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


def print_table(results, memory, balance, args):
    print(f"\n## Server CPU per request (lower is better), {args.seconds} s per case, "
          "server on CPU 0, load on CPU 1\n")
    print("| server | " + " | ".join(CASES) + " |")
    print("| --- | " + " | ".join("---" for _ in CASES) + " |")
    for name, res in results.items():
        print(f"| {name} | " + " | ".join(fmt_cell(res.get(c)) for c in CASES) + " |")
    if memory:
        print("\n## Memory (userspace RSS of the process tree)\n")
        print("| server | idle | per idle HTTP/1.1 conn (8,000) | per idle HTTP/2 conn (4,000) |")
        print("| --- | --- | --- | --- |")
        for name, m in memory.items():
            h2 = f"{m['h2'] / 1024:.2f} KiB" if m["h2"] is not None else "n/a"
            print(f"| {name} | {m['idle'] / 1e6:.1f} MB | {m['h1'] / 1024:.2f} KiB | {h2} |")
    if balance:
        print("\n## Accept balance, tricorn with 2 workers, new connection per request\n")
        print("shares: " + ", ".join(f"{b:.1%}" for b in balance))


if __name__ == "__main__":
    main()
