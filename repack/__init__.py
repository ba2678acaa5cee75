"""amx-repack: write GGUF models with their quantized weights already in the CPU kernels' layout.

Python API (the CLI is a thin layer over it)::

    import repack
    report = repack.convert("model.gguf", "model-amx.gguf", layout="amx")
    print(report.repacked, report.gb_per_s)
    assert repack.verify("model.gguf", "model-amx.gguf").ok
    repack.unpack("model-amx.gguf", "model-again.gguf")      # byte-identical to model.gguf
    info = repack.inspect("model-amx.gguf")
"""

import sys
import types

__version__ = "0.1.0"

# The API is loaded on first use (PEP 562), so that ``import repack`` costs nothing: the command
# line (``python -m repack``, which imports this package first) installs its SIGINT/SIGTERM
# handlers before numpy, click and the kernels are imported (see __main__.py).
_API = {
    "convert": "pipeline", "ConvertReport": "pipeline",
    "verify": "verify", "VerifyReport": "verify",
    "unpack": "unpack", "UnpackReport": "unpack",
    "inspect": "inspect",
    "batch": "batch", "BatchReport": "batch", "JobResult": "batch", "Job": "batch",
    "RepackError": "errors", "InputError": "errors", "OutputError": "errors",
    "OutputExists": "errors", "NoRecords": "errors", "TooMuchFiller": "errors",
    "UsageError": "errors", "Interrupted": "errors", "VerificationFailed": "errors",
    "GGUFFormatError": "errors",
}

__all__ = ["convert", "verify", "unpack", "inspect", "batch", "ConvertReport", "VerifyReport",
           "BatchReport", "JobResult", "Job",
           "UnpackReport", "RepackError", "InputError", "OutputError",
           "OutputExists", "NoRecords", "TooMuchFiller", "UsageError", "Interrupted",
           "VerificationFailed", "GGUFFormatError", "__version__"]


# Four functions share their name with the module that defines them. Importing such a module
# (``from repack.verify import ...``, which any command does) binds the module to the package
# attribute: the function takes its place, as when this file imported the API eagerly.
_SHADOWED = {"verify", "unpack", "inspect", "batch"}


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value      # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
