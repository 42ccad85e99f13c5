"""The rest of the foundation: bind forms, preloading, the ABI check, the example apps."""
import os
import socket
import subprocess
from pathlib import Path

from conftest import BUILD, TESTAPP, TRICORN, Server, wait_until


def curl(*args):
    r = subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_fd_bind_uses_an_inherited_socket(start_server):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    fd = listener.fileno()
    s = start_server("-b", f"fd://{fd}", popen={"pass_fds": (fd,)})
    listener.close()
    assert f"Listening at: http://127.0.0.1:{port}" in s.log()
    assert curl(f"http://127.0.0.1:{port}/") == b"Hello, World!"


def test_ipv6_bind(start_server):
    s = start_server("-b", "[::1]:0")
    port = int(__import__("re").search(r"Listening at: http://\[::1\]:(\d+)", s.log()).group(1))
    assert curl(f"http://[::1]:{port}/scope").decode().count("server=::1:") == 1


def test_preload_loads_the_app_in_the_master(start_server):
    s = start_server("-w", "2", "--preload")
    maps = Path(f"/proc/{s.proc.pid}/maps").read_text()
    assert str(TESTAPP) in maps
    assert curl(s.url + "/") == b"Hello, World!"


def test_preload_with_a_bad_app_exits_4(tmpdir_path):
    out = subprocess.run([str(TRICORN), "--preload", "-b", "127.0.0.1:0", "/nonexistent/libx.so"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 4
    assert "cannot load app /nonexistent/libx.so" in out.stderr


def build_entry(tmpdir_path, name, abi):
    """A shared object exporting an AppEntry with the given ABI word, as an app built
    against other headers would."""
    src = Path(tmpdir_path, f"{name}.c")
    src.write_text("struct entry { unsigned long long abi; void* call; const char* name; };\n"
                   "static void f(void) {}\n"
                   f"const struct entry app = {{ {abi}ULL, (void*)f, \"f\" }};\n")
    lib = Path(tmpdir_path, f"lib{name}.so")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return lib


def test_an_app_built_for_another_interface_is_refused(tmpdir_path):
    lib = build_entry(tmpdir_path, "old", (0 << 32) | 100000)  # interface 0, Boost 1.0
    out = subprocess.run([str(TRICORN), "--check-config", str(lib)], capture_output=True, text=True)
    assert out.returncode == 4
    assert (f"app {lib}:app was built for app interface 0 with Boost 100000 and a frame cache of "
            "0; this server has interface 3 with Boost 108100 and a frame cache of 16: rebuild the "
            "app against this server's headers, including <tricorn/app.hpp> before any Boost.Asio "
            "header") in out.stderr


def test_an_app_built_with_asios_default_frame_cache_is_refused(tmpdir_path):
    # What an app gets when it includes Boost.Asio before <tricorn/app.hpp>: Asio's
    # default of 2, a per-thread layout the server does not share.
    lib = build_entry(tmpdir_path, "cache2", (3 << 32) | (2 << 24) | 108100)
    out = subprocess.run([str(TRICORN), "--check-config", str(lib)], capture_output=True, text=True)
    assert out.returncode == 4
    assert "with Boost 108100 and a frame cache of 2; this server has interface 3" in out.stderr


def test_example_echo_streams_the_body_back(start_server):
    s = start_server(app=BUILD / "libecho.so")
    payload = os.urandom(3_000_000)
    r = subprocess.run(["curl", "-sS", "--data-binary", "@-", "-H", "Content-Type: application/x-t",
                        "-D", "-", s.url + "/"], input=payload, capture_output=True, timeout=30)
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    assert b"content-type: application/x-t" in head.lower()
    assert b"transfer-encoding: chunked" in head.lower()
    assert body == payload


def test_example_stream_sends_pieces_over_time(start_server):
    s = start_server(app=BUILD / "libstream.so")
    assert curl(s.url + "/?count=3&interval=10") == b"chunk 1\nchunk 2\nchunk 3\ndone\n"


def test_example_hello(start_server):
    s = start_server(app=BUILD / "libhello.so")
    assert curl(s.url + "/anything") == b"Hello, World!"
