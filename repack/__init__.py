"""amx-repack: write GGUF models with their quantized weights already in the CPU kernels' layout.

Python API (the CLI is a thin layer over it)::

    import repack
    report = repack.convert("model.gguf", "model-amx.gguf", layout="amx")
    print(report.repacked, report.gb_per_s)
    assert repack.verify("model.gguf", "model-amx.gguf").ok
    repack.unpack("model-amx.gguf", "model-again.gguf")      # byte-identical to model.gguf
    info = repack.inspect("model-amx.gguf")
"""

__version__ = "0.1.0"

from .errors import (GGUFFormatError, InputError, Interrupted, OutputError, RepackError,  # noqa: E402
                     UsageError, VerificationFailed)
from .inspect import inspect  # noqa: E402
from .pipeline import ConvertReport, convert  # noqa: E402
from .unpack import UnpackReport, unpack  # noqa: E402
from .verify import VerifyReport, verify  # noqa: E402

__all__ = ["convert", "verify", "unpack", "inspect", "ConvertReport", "VerifyReport",
           "UnpackReport", "RepackError", "InputError", "OutputError",
           "UsageError", "Interrupted", "VerificationFailed", "GGUFFormatError", "__version__"]
