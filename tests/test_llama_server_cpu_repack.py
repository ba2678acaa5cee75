"""llama-server on our cpu-repack file: the same text as stock llama-server on the original.

The servers are the ``avx2`` and ``avx2-stock`` builds test_llama_cpu_repack.py uses (built once,
cached; they run on any AVX2 CPU, so unlike test_llama_server.py's AMX servers these run on every
x86 CI machine). As there, each test starts llama-server on 127.0.0.1 on a free port, waits for
``/health`` (bounded), sends one ``/completion`` with temperature 0, and stops the server whatever
happens. A file the server cannot run (one made for another CPU, ours under stock llama-server)
makes it exit with the runtime's line, without serving and without hanging.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.test_llama_cpu_repack import cpu_repack_converted, cpu_runtime  # noqa: F401 (fixtures)
from tests.test_llama_server import READY_TIMEOUT_S, ServerExited, completion, llama_server

# 'CPU_REPACK model buffer size =    90.00 MiB' in llama.cpp's load log
BUFFER_LINE = re.compile(r"(CPU_REPACK|CPU_Mapped) model buffer size\s*=\s*([\d.]+) MiB")


def buffers(log: str) -> dict[str, float]:
    return {name: float(mib) for name, mib in BUFFER_LINE.findall(log)}


def test_server_on_cpu_repack_file_answers_as_stock(cpu_runtime, cpu_repack_converted, tmp_path):
    original, ours = cpu_repack_converted("Q4_0")
    with llama_server(cpu_runtime["stock"], original, tmp_path / "stock.log") as url:
        stock = completion(url)
    with llama_server(cpu_runtime["patched"], ours, tmp_path / "patched.log") as url:
        patched = completion(url)
    assert patched == stock and stock.strip()
    # stock repacked every Q4_0 matrix at load; the patched server computes them from the mapped
    # file and repacks only Gemma's tied output matrix (token_embd.weight stays plain in our file)
    stock_buffers = buffers((tmp_path / "stock.log").read_text(errors="replace"))
    patched_buffers = buffers((tmp_path / "patched.log").read_text(errors="replace"))
    assert "CPU_Mapped" in patched_buffers
    assert stock_buffers["CPU_REPACK"] - patched_buffers.get("CPU_REPACK", 0) > 10


@pytest.mark.parametrize("server, target, line", [
    # a file made for another CPU: arm-i8mm's Q4_0 is 4x8, this build computes Q4_0 as 8x8
    ("patched", "arm-i8mm", "is repacked as cpu_q4_0_4x8 for the CPU target 'arm-i8mm', but this CPU "
                            "computes q4_0 weights of its shape as cpu_q4_0_8x8"),
    ("stock", "x86-avx2", "has invalid ggml type 2242"),
], ids=["patched-other-cpu", "stock"])
def test_server_refuses_cpu_repack_file_and_exits(cpu_runtime, cpu_repack_converted, tmp_path, server,
                                                  target, line):
    _, ours = cpu_repack_converted("Q4_0", target)
    start = time.monotonic()
    with pytest.raises(ServerExited) as refused:
        with llama_server(cpu_runtime[server], ours, tmp_path / "server.log"):
            pytest.fail("llama-server served a file it cannot run")
    message = str(refused.value)
    assert message.startswith("exit 1:"), message[:200]
    assert line in message
    if server == "patched":
        assert "`amx-repack unpack`" in message
    assert time.monotonic() - start < READY_TIMEOUT_S
