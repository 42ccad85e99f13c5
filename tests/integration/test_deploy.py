"""The deployment files in deploy/: nginx in front of tricorn for real, HAProxy's and
Kubernetes' files checked against tricorn's own settings."""
import asyncio
import re
import shutil
import socket
import subprocess
from pathlib import Path

import websockets
import yaml

from conftest import BUILD, ROOT, TRICORN, wait_until

DEPLOY = ROOT / "deploy"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nginx_in_front_of_tricorn(start_server, tmpdir_path):
    Path(tmpdir_path).chmod(0o755)  # nginx's workers run as nobody: let them reach the socket
    sock = Path(tmpdir_path, "tricorn.sock")
    s = start_server("-b", f"unix:{sock}", "--health-path", "/healthz")
    port = free_port()
    conf = (DEPLOY / "nginx.conf").read_text()
    conf = conf.replace("worker_processes auto;", "worker_processes 1;")
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{port};")
    conf = conf.replace("unix:/run/tricorn/tricorn.sock", f"unix:{sock}")
    Path(tmpdir_path, "nginx.conf").write_text(conf)
    nginx = subprocess.Popen(["nginx", "-p", tmpdir_path, "-c", f"{tmpdir_path}/nginx.conf", "-g",
                              f"daemon off; pid {tmpdir_path}/nginx.pid; error_log stderr;"],
                             stderr=subprocess.PIPE)
    try:
        def up():
            with socket.socket() as c:
                return c.connect_ex(("127.0.0.1", port)) == 0
        wait_until(up, what="nginx to listen")
        out = subprocess.run(["curl", "-sS", "-H", "X-Forwarded-For: 203.0.113.50",
                              f"http://127.0.0.1:{port}/scope"], capture_output=True, timeout=10).stdout
        # nginx appended its peer (127.0.0.1, trusted); the client is the hop before it.
        assert b"client=203.0.113.50:0\n" in out and b"scheme=http\n" in out, out
        health = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{port}/healthz"],
                                capture_output=True, timeout=10).stdout
        assert health == b"ok\n"

        async def echo():
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws/echo") as ws:
                await ws.send("through nginx")
                return await ws.recv()
        assert asyncio.run(asyncio.wait_for(echo(), 10)) == "through nginx"
    finally:
        nginx.terminate()
        nginx.wait(10)


def test_haproxy_config_is_valid():
    r = subprocess.run(["haproxy", "-c", "-f", str(DEPLOY / "haproxy.cfg")], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    text = (DEPLOY / "haproxy.cfg").read_text()
    assert "send-proxy-v2" in text and "option httpchk GET /healthz" in text


def test_kubernetes_manifest_agrees_with_tricorn(tmpdir_path):
    docs = {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text())}
    assert set(docs) == {"ConfigMap", "Deployment", "Service"}
    tricorn_yaml = docs["ConfigMap"]["data"]["tricorn.yaml"]
    settings = yaml.safe_load(tricorn_yaml)
    # The ConfigMap's tricorn.yaml is a valid configuration.
    Path(tmpdir_path, "tricorn.yaml").write_text(tricorn_yaml)
    check = subprocess.run([str(TRICORN), "--check-config", "-c", f"{tmpdir_path}/tricorn.yaml",
                            str(BUILD / "libhello.so")], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    port = int(settings["bind"][0].rsplit(":", 1)[1])
    assert container["ports"][0]["containerPort"] == port
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == settings["health_path"]
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + settings["graceful_timeout"]
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]
