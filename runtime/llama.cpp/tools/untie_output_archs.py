"""Which llama.cpp architectures load a separate ``output.weight`` and otherwise tie it to
``token_embd.weight``: the table behind ``convert --untie-output`` (formats/tied_output.py),
derived from llama.cpp's own loader.

    python runtime/llama.cpp/tools/untie_output_archs.py [SOURCE_DIR | SDIST.tar.gz]

(default: the pinned sdist, fetched by build.py). Prints the architecture names, one a line.

The rule, read from each architecture's ``load_arch_tensors`` (``src/models/*.cpp``, inherited
from its base class where it has none; the class an architecture uses is the ``case LLM_ARCH_X:
return new llama_model_Y`` of ``src/llama-model.cpp``, its name the ``{ LLM_ARCH_X, "name" }`` of
``src/llama-arch.cpp``): the architecture creates ``LLM_TENSOR_OUTPUT "weight"`` with
``TENSOR_NOT_REQUIRED`` *and* falls back to ``output = create_tensor(LLM_TENSOR_TOKEN_EMBD
"weight", ..., TENSOR_DUPLICATED)``. Such a loader takes a file with or without ``output.weight``;
any other one either never has a tied output (output required), or never reads ``output.weight``
(the head is always the embedding, e.g. gemma, gemma2, command-r: the added tensor would be an
unexpected one and llama.cpp refuses the file with "wrong number of tensors").
"""

from __future__ import annotations

import re
import sys
import tarfile
from pathlib import Path

_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_ARCH_NAME = re.compile(r'\{\s*(LLM_ARCH_\w+)\s*,\s*"([^"]+)"\s*\}')
_ARCH_CLASS = re.compile(r"((?:case\s+LLM_ARCH_\w+\s*:\s*)+)return\s+new\s+(llama_model_\w+)")
_LOAD_TENSORS = re.compile(r"void\s+(llama_model_\w+)::load_arch_tensors\s*\([^)]*\)\s*\{")
_BASE = re.compile(r"struct\s+(llama_model_\w+)\s*:\s*public\s+(llama_model_\w+)")
_OUTPUT = re.compile(r'create_tensor\(\s*tn\(\s*LLM_TENSOR_OUTPUT\s*,\s*"weight"\s*\)[^;]*;')
_FALLBACK = re.compile(r'output\s*=\s*create_tensor\(\s*tn\(\s*LLM_TENSOR_TOKEN_EMBD\s*,\s*'
                       r'"weight"\s*\)[^;]*TENSOR_DUPLICATED[^;]*;')


def _body(text: str, start: int) -> str:
    depth, i = 1, start
    while depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[start:i]


def derive(files: dict[str, str]) -> list[str]:
    """``files``: path relative to llama.cpp's src/ -> text (llama-model.cpp, llama-arch.cpp,
    models/*.cpp, models/models.h). Returns the architecture names, sorted."""
    strip = {p: _COMMENT.sub("", t) for p, t in files.items()}
    names = dict(_ARCH_NAME.findall(strip["llama-arch.cpp"]))
    class_of = {}
    for m in _ARCH_CLASS.finditer(strip["llama-model.cpp"]):
        for arch in re.findall(r"LLM_ARCH_\w+", m.group(1)):
            class_of[arch] = m.group(2)
    bodies, bases = {}, {}
    for path, text in strip.items():
        if path.startswith("models/"):
            bases.update(_BASE.findall(text))
            for m in _LOAD_TENSORS.finditer(text):
                bodies[m.group(1)] = re.sub(r"\s+", " ", _body(text, m.end()))
    out = []
    for arch, cls in class_of.items():
        while cls not in bodies and cls in bases:
            cls = bases[cls]
        body = bodies.get(cls, "")
        optional_output = any("TENSOR_NOT_REQUIRED" in o for o in _OUTPUT.findall(body))
        if optional_output and _FALLBACK.search(body) and arch in names:
            out.append(names[arch])
    return sorted(out)


def read_source(where: Path) -> dict[str, str]:
    """The files derive() reads, from a llama.cpp checkout or from the llama-cpp-python sdist."""
    wanted = re.compile(r"(llama-model\.cpp|llama-arch\.cpp|models/[^/]+\.(?:cpp|h))$")
    files = {}
    if where.is_dir():
        src = where / "src"
        for p in src.rglob("*"):
            rel = p.relative_to(src).as_posix()
            if wanted.fullmatch(rel):
                files[rel] = p.read_text()
        return files
    prefix = re.compile(r"[^/]+/vendor/llama\.cpp/src/")
    with tarfile.open(where) as tar:
        for m in tar:
            head = prefix.match(m.name)
            if head and m.isfile() and wanted.fullmatch(m.name[head.end():]):
                files[m.name[head.end():]] = tar.extractfile(m).read().decode()
    return files


def main(argv: list[str]) -> int:
    if argv:
        where = Path(argv[0])
    else:
        import importlib.util
        spec = importlib.util.spec_from_file_location("runtime_build",
                                                      Path(__file__).parents[1] / "build.py")
        build = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(build)
        where = build.fetch_sdist()
    print("\n".join(derive(read_source(where))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
