#!/usr/bin/python3
"""User-space instructions a tricorn worker spends per request, counted by callgrind: a
figure that does not move with the machine's noise, for predicting and checking a change
to the request path before the timed suite (bench.py) is run.

Each case runs the server under callgrind twice, with N and 2N requests (or two load
durations where the client cannot count requests), and divides the difference of the
worker's instructions by the difference of the requests: start-up, the master and the
client's connection set-up cancel out. 127.0.0.1 only; run by hand, never by the tests.

  scripts/bench/instructions.py [--build build-release] [--cases keep-alive,h2c,...]
"""
import argparse
import glob
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import wait_port  # scripts/bench/bench.py, beside this file

ROOT = Path(__file__).resolve().parents[2]
PORT = 8191

# Each case's load for an amount: a request count, or for new-conn a duration in seconds.
CASES = {
    "keep-alive": lambda n: ["h2load", "--h1", "-n", str(n), "-c", "8", f"http://127.0.0.1:{PORT}/"],
    "pipelined": lambda n: ["h2load", "--h1", "-n", str(n), "-c", "4", "-m", "16",
                            f"http://127.0.0.1:{PORT}/"],
    "h2c": lambda n: ["h2load", "-n", str(n), "-c", "4", "-m", "16", f"http://127.0.0.1:{PORT}/"],
    # wrk cannot stop at a count: two durations, divided by the requests it reports.
    "new-conn": lambda seconds: ["wrk", "-t1", "-c16", f"-d{seconds}s", "-H", "Connection: close",
                                 f"http://127.0.0.1:{PORT}/"],
}
COUNTS = {"keep-alive": 20000, "pipelined": 40000, "h2c": 20000, "new-conn": 3}


def requests_done(case, out):
    if case == "new-conn":
        return int(re.search(r"(\d+) requests in", out).group(1))
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    return int(m.group(1))


def worker_instructions(outdir, master_pid):
    """The worker's total: the callgrind file that is not the master's."""
    for path in glob.glob(f"{outdir}/cg.*"):
        if path.endswith(f".{master_pid}"):
            continue
        for line in open(path, errors="replace"):
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError("no callgrind file for the worker")


def one_run(build, case, amount):
    with tempfile.TemporaryDirectory(prefix="tricorn-cg-") as outdir:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={outdir}/cg.%p",
               str(build / "tricorn"), "-w", "1", "-b", f"127.0.0.1:{PORT}", "--keep-alive", "75",
               "--timeout", "600", str(build / "libhello.so")]
        server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        try:
            wait_port(PORT, timeout=60)  # valgrind starts slowly
            out = subprocess.run(CASES[case](amount), capture_output=True, text=True,
                                 timeout=600).stdout
            done = requests_done(case, out)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(120)
        return worker_instructions(outdir, server.pid), done


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build-release")
    ap.add_argument("--cases", default="keep-alive,pipelined,h2c,new-conn")
    args = ap.parse_args()
    build = (ROOT / args.build).resolve()
    for case in args.cases.split(","):
        n = COUNTS[case]
        i1, r1 = one_run(build, case, n)
        i2, r2 = one_run(build, case, 2 * n)
        print(f"{case}: {(i2 - i1) / (r2 - r1):,.0f} instructions per request "
              f"({r1} and {r2} requests)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
