"""Tests of :mod:`common.monailabel.server` with a tiny HTTP server script instead of MONAI Label (no extra needed).

The script answers ``GET /info/`` with 200 and its ``TMPDIR`` as the body, after starting a child process (one that
ignores SIGTERM with ``--stubborn-child``), so that stopping the whole process group can be checked.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from common.monailabel import server as servers
from common.monailabel.server import ServerProcess

SERVER_SCRIPT = """
import http.server, os, signal, subprocess, sys

port = int(sys.argv[sys.argv.index("--port") + 1])
ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN); " if "--stubborn-child" in sys.argv else ""
code = "import signal, time; " + ignore + "print('ready', flush=True); time.sleep(600)"
child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "ready"
open("child.pid", "w").write(str(child.pid))


class Info(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/info/" else 404)
        self.end_headers()
        self.wfile.write(os.environ["TMPDIR"].encode())


print("serving on", port, flush=True)
http.server.HTTPServer(("127.0.0.1", port), Info).serve_forever()
"""


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _tiny_server(tmp_path: Path, *flags: str) -> ServerProcess:
    script = tmp_path / "tiny_server.py"
    script.write_text(SERVER_SCRIPT)
    command = [sys.executable, str(script), "--port", str(servers.free_port()), *flags]
    return servers.start_server("tiny server", command, tmp_path / "work", servers.server_env("cpu"), timeout_s=60.0)


def _get(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return int(response.status), response.read().decode()


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads process states from /proc")
@pytest.mark.parametrize("stubborn", [False, True], ids=["child-stops-on-sigterm", "child-ignores-sigterm"])
def test_start_waits_for_info_and_stop_ends_the_whole_process_group(tmp_path: Path, stubborn: bool) -> None:
    server = _tiny_server(tmp_path, *(["--stubborn-child"] if stubborn else []))
    work = tmp_path / "work"
    try:
        assert server.name == "tiny server"
        assert server.url.startswith("http://127.0.0.1:")
        assert server.command[-2 if stubborn else -1] == server.url.rsplit(":", 1)[1]
        assert server.start_s > 0
        assert server.process.poll() is None
        assert os.getpgid(server.process.pid) == server.process.pid  # its own process group
        assert (server.log, server.tmp) == (work / "server.log", work / "tmp")
        assert server.tmp.is_dir()
        assert _get(f"{server.url}/info/") == (200, str(server.tmp))  # the server's TMPDIR
        assert "serving on" in server.log_tail()
        assert server.log_tail(5) == server.log.read_text()[-5:]
        child = int((work / "child.pid").read_text())  # written in the server's working folder
        assert _running(child)
        assert os.getpgid(child) == server.process.pid
    finally:
        started = time.monotonic()
        servers.stop_server(server, term_wait_s=1.0, kill_wait_s=10.0)
        seconds = time.monotonic() - started
    assert server.process.returncode == -signal.SIGTERM
    assert not _running(child)
    if stubborn:  # SIGKILL after term_wait_s
        assert seconds >= 1.0
    servers.stop_server(server)  # nothing left: returns at once
    servers.stop_server(server.process)


def test_get_answers_with_requests(tmp_path: Path) -> None:
    pytest.importorskip("requests")
    server = _tiny_server(tmp_path)
    try:
        assert server.get("/info/").status_code == 200
        assert server.get("/nothing").status_code == 404
    finally:
        servers.stop_server(server)


def test_a_server_that_exits_at_once_raises_with_its_log(tmp_path: Path) -> None:
    code = "import sys; print('no such app folder', file=sys.stderr); sys.exit(3)"
    command = [sys.executable, "-c", code, "--port", str(servers.free_port())]
    with pytest.raises(RuntimeError, match=r"^quick exited with 3:\n(.|\n)*no such app folder"):
        servers.start_server("quick", command, tmp_path, servers.server_env("cpu"), timeout_s=60.0)


def test_a_server_that_does_not_answer_is_stopped_and_raises_with_its_log(tmp_path: Path) -> None:
    code = "import os, time; open('pid', 'w').write(str(os.getpid())); print('loading', flush=True); time.sleep(600)"
    command = [sys.executable, "-c", code, "--port", str(servers.free_port())]
    with pytest.raises(RuntimeError, match=r"^silent not up after 2 s:\n(.|\n)*loading"):
        servers.start_server("silent", command, tmp_path, servers.server_env("cpu"), timeout_s=2.0)
    assert (tmp_path / "pid").is_file()
    assert not _running(int((tmp_path / "pid").read_text()))


def test_a_command_without_port_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--port PORT"):
        servers.start_server("no port", [sys.executable, "-c", "pass", "--port"], tmp_path, servers.server_env("cpu"))
    assert not (tmp_path / "server.log").exists()  # nothing started


def test_log_tail_before_the_log_exists(tmp_path: Path) -> None:
    server = ServerProcess("none", "http://127.0.0.1:1", None, tmp_path / "missing.log", tmp_path)  # type: ignore[arg-type]
    assert server.log_tail() == ""


def test_free_port_can_be_bound() -> None:
    port = servers.free_port()
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))


def test_server_env_drops_thread_counts_and_hides_gpus_for_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("SERVER_ENV_TEST", "kept")
    cpu = servers.server_env("cpu")
    assert "OMP_NUM_THREADS" not in cpu
    assert "MKL_NUM_THREADS" not in cpu
    assert cpu["CUDA_VISIBLE_DEVICES"] == ""
    assert cpu["SERVER_ENV_TEST"] == "kept"
    cuda = servers.server_env("cuda", {"OMP_NUM_THREADS": "1", "PYTHONPATH": "/x"})
    assert cuda["CUDA_VISIBLE_DEVICES"] == "0"
    assert (cuda["OMP_NUM_THREADS"], cuda["PYTHONPATH"]) == ("1", "/x")
    assert "MKL_NUM_THREADS" not in cuda
    assert os.environ["OMP_NUM_THREADS"] == "3"  # the caller's environment is left alone


def test_start_server_command() -> None:
    command = servers.start_server_command(Path("/a"), Path("/s"), [("models", "m1,m2"), ("sam2", "false")], port=8123)
    assert command[:4] == [sys.executable, "-m", "monailabel.main", "start_server"]
    assert command[4:] == [
        "--app", "/a", "--studies", "/s", "--host", "127.0.0.1", "--port", "8123",
        "--conf", "models", "m1,m2", "--conf", "sam2", "false",
    ]  # fmt: skip
    free = servers.start_server_command(Path("/a"), Path("/s"))
    assert int(free[free.index("--port") + 1]) > 0


def test_torchvision_shim_file(tmp_path: Path) -> None:
    folder = servers.write_torchvision_shim(tmp_path / "site", "import sys\nsys.shim_extra = True")
    assert folder == tmp_path / "site"
    text = (folder / "sitecustomize.py").read_text()
    assert text.startswith(servers.TORCHVISION_SHIM)
    assert text.endswith("\nimport sys\nsys.shim_extra = True\n")
    compile(text, "sitecustomize.py", "exec")
    assert (
        servers.write_torchvision_shim(tmp_path / "plain") / "sitecustomize.py"
    ).read_text() == servers.TORCHVISION_SHIM


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="torchvision is not installed")
def test_torchvision_imports_with_the_shim(tmp_path: Path) -> None:
    shim = servers.write_torchvision_shim(tmp_path / "site")
    threads, error = servers.torchvision_import_error(dict(os.environ, PYTHONPATH=str(shim)))
    assert error is None
    assert threads >= 1
