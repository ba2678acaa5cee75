"""llama-server on our AMX file: the same text as stock llama-server on the original.

The servers are the ``emulate-amx`` and ``emulate-amx-stock`` builds test_llama_runtime uses (built
once, cached). Each test starts llama-server on 127.0.0.1 on a free port, waits for ``/health``
(bounded), sends one ``/completion`` with temperature 0, and stops the server whatever happens. A
file the server cannot run (ours on a CPU without AMX, ours under stock llama-server) makes it
exit with the clear line, without serving and without hanging.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

import repack
from tests.test_llama_runtime import PROMPT, runtime  # noqa: F401 (fixture)

N_PREDICT = 16
# load + warm-up of a 270M model with emulated tiles on 2 loaded cores takes ~10 s; a start that
# has not answered /health in this long has hung
READY_TIMEOUT_S = 180
REQUEST_TIMEOUT_S = 300
NO_AMX = {"AMX_TILE_EMULATION_DENY": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerExited(Exception):
    """llama-server ended before it was ready; the message is its exit code and its whole log
    (at verbosity 4 the refusal line is far from the end)."""


@contextmanager
def llama_server(bin_dir: Path, model: Path, log: Path, env: dict | None = None):
    """Yields the base URL of a ready llama-server; always stopped (SIGTERM, then SIGKILL)."""
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([bin_dir / "llama-server", "-m", model, "--host", "127.0.0.1",
                                 "--port", str(port), "-t", "2", "-c", "512", "-np", "1",
                                 # verbosity 4: the loader's buffer sizes (CPU_Mapped, the
                                 # repacked copies) are logged only at this level
                                 "--no-webui", "-lv", "4"],
                                stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise ServerExited(f"exit {proc.returncode}: {log.read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass  # not listening yet, or 503 while loading
            assert time.monotonic() < deadline, f"llama-server not ready after {READY_TIMEOUT_S} s"
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def completion(url: str) -> str:
    body = json.dumps({"prompt": PROMPT, "n_predict": N_PREDICT, "temperature": 0}).encode()
    request = urllib.request.Request(f"{url}/completion", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as r:
        reply = json.load(r)
    assert reply["tokens_predicted"] >= 1, reply
    return reply["content"]


@pytest.fixture(scope="module")
def amx_file(gemma_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("server") / "gemma-amx.gguf"
    repack.convert(gemma_path, out, layout="amx")
    return out


def test_server_on_amx_file_answers_as_stock(runtime, gemma_path, amx_file, tmp_path):
    with llama_server(runtime["stock"], gemma_path, tmp_path / "stock.log") as url:
        stock = completion(url)
    with llama_server(runtime["patched"], amx_file, tmp_path / "patched.log") as url:
        patched = completion(url)
    assert patched == stock and stock.strip()
    log = (tmp_path / "patched.log").read_text(errors="replace")
    assert "CPU_Mapped model buffer size" in log


@pytest.mark.parametrize("server, env, line", [
    ("patched", NO_AMX, "is packed for Intel AMX (amx_"),
    ("stock", {}, "invalid ggml type 10"),
], ids=["patched-without-amx", "stock"])
def test_server_refuses_amx_file_and_exits(runtime, amx_file, tmp_path, server, env, line):
    start = time.monotonic()
    with pytest.raises(ServerExited) as refused:
        with llama_server(runtime[server], amx_file, tmp_path / "server.log", env=env):
            pytest.fail("llama-server served a file it cannot run")
    message = str(refused.value)
    assert message.startswith("exit 1:"), message[:200]
    assert line in message
    assert time.monotonic() - start < READY_TIMEOUT_S
