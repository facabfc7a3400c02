"""A thin layer over llama-cpp-python's low-level API: one model, one multi-sequence context.

Why not ``llama_cpp.Llama``: it drives one sequence at a time. Continuous batching needs the raw
pieces: a ``llama_batch`` that mixes tokens of several sequences, per-sequence KV removal, and one
sampler chain per sequence. This module wraps exactly those and nothing else.

Thread safety: the context (decode, KV, samplers) belongs to one thread, the scheduler's. The
vocabulary is read-only after loading, so tokenizing and detokenizing are safe from any thread.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import llama_cpp as ll
import numpy as np

from voicechat.engines.protocols import EngineError, GenerationParams
from voicechat.llm.threads import default_threads

log = logging.getLogger(__name__)

_backend_ready = False


def _init_backend() -> None:
    global _backend_ready
    if not _backend_ready:
        # llama-cpp-python prints every llama.cpp log line unless its logger is set higher.
        lib_logger = logging.getLogger("llama-cpp-python")
        if lib_logger.level == logging.NOTSET:
            lib_logger.setLevel(logging.ERROR)
        ll.llama_backend_init()
        _backend_ready = True


@dataclass(frozen=True, slots=True)
class BatchToken:
    token: int
    pos: int
    seq: int
    logits: bool = False


REPEAT_LAST_N = 64  # tokens the repeat penalty looks back over


class Sampler:
    """One sequence's sampler chain (its own settings and random state)."""

    def __init__(self, params: GenerationParams, n_vocab: int) -> None:
        chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        if params.temperature <= 0:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_greedy())
        else:
            if params.repeat_penalty != 1.0:
                # This llama.cpp's C API takes the vocabulary size first (include/llama.h).
                penalties = ll.llama_sampler_init_penalties(n_vocab, REPEAT_LAST_N, params.repeat_penalty, 0.0, 0.0)
                ll.llama_sampler_chain_add(chain, penalties)
            if params.top_k > 0:
                ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_k(params.top_k))
            if params.top_p < 1.0:
                ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_p(params.top_p, 1))
            if params.min_p > 0:
                ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_min_p(params.min_p, 1))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_temp(params.temperature))
            seed = ll.LLAMA_DEFAULT_SEED if params.seed is None else params.seed & 0xFFFFFFFF
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_dist(seed))
        self._chain = chain

    def sample(self, ctx: LlamaContext, index: int) -> int:
        """Sample (and accept) a token from the ``index``-th batch entry's logits."""
        return int(ll.llama_sampler_sample(self._chain, ctx.raw, index))

    def close(self) -> None:
        if self._chain is not None:
            ll.llama_sampler_free(self._chain)
            self._chain = None


class LlamaContext:
    """A loaded GGUF with one context of ``n_seq_max`` sequences."""

    def __init__(
        self,
        path: str | Path,
        *,
        n_ctx: int,
        n_seq_max: int,
        n_batch: int,
        n_threads: int = 0,
        n_gpu_layers: int = 0,
        kv_unified: bool = True,
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise EngineError(f"LLM model file not found: {path} (set llm.model to a GGUF file)")
        _init_backend()
        if n_gpu_layers != 0 and not ll.llama_supports_gpu_offload():
            # llama.cpp would run every layer on the CPU without a word.
            log.warning(
                "llm.n_gpu_layers = %d, but this llama-cpp-python was built without GPU support: every layer "
                "runs on the CPU (rebuild it with CMAKE_ARGS=\"-DGGML_CUDA=on\", README \"GPU\")", n_gpu_layers,
            )
        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = 2**31 - 1 if n_gpu_layers < 0 else n_gpu_layers
        self._model = ll.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise EngineError(f"could not load the GGUF model {path}: not a GGUF file llama.cpp can read (llm.model)")
        self._vocab = ll.llama_model_get_vocab(self._model)
        self.n_vocab = int(ll.llama_vocab_n_tokens(self._vocab))
        threads = n_threads or default_threads()
        cparams = ll.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = cparams.n_ubatch = n_batch
        cparams.n_seq_max = n_seq_max
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.kv_unified = kv_unified
        cparams.no_perf = True
        self._ctx = ll.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            ll.llama_model_free(self._model)
            raise EngineError(
                f"llama.cpp could not create a context for {path} (n_ctx={n_ctx}, n_seq_max={n_seq_max}): "
                "lower llm.n_ctx or llm.n_seq_max"
            )
        self._mem = ll.llama_get_memory(self._ctx)
        self._batch = ll.llama_batch_init(n_batch, 0, 1)
        self.path = path
        self.n_ctx = int(ll.llama_n_ctx(self._ctx))
        self.n_ctx_seq = int(ll.llama_n_ctx_seq(self._ctx))
        self.n_batch = n_batch
        self.n_seq_max = int(ll.llama_n_seq_max(self._ctx))
        self.n_threads = threads
        self.add_bos = bool(ll.llama_vocab_get_add_bos(self._vocab))
        self.bos_text = self._special_text(ll.llama_vocab_bos(self._vocab))
        self.eos_text = self._special_text(ll.llama_vocab_eos(self._vocab))

    @property
    def raw(self) -> ll.llama_context_p:
        return self._ctx

    # -- vocabulary (any thread) -------------------------------------------------
    def chat_template(self) -> str | None:
        raw = ll.llama_model_chat_template(self._model, None)
        return raw.decode("utf-8", errors="replace") if raw else None

    def tokenize(self, text: str | bytes, *, continuation: bool = False) -> list[int]:
        """Tokens of a rendered prompt: special tokens parsed, BOS added unless the text has it.

        ``continuation``: the text continues tokens already in a sequence (no BOS).
        """
        data = text.encode("utf-8") if isinstance(text, str) else text
        bos = self.bos_text.encode("utf-8") if self.bos_text else b""
        add_bos = self.add_bos and not continuation and not (bos and data.startswith(bos))
        size = len(data) + 8
        while True:
            buf = (ll.llama_token * size)()
            n = ll.llama_tokenize(self._vocab, data, len(data), buf, size, add_bos, True)
            if n >= 0:
                return list(buf[:n])
            size = -n

    def piece(self, token: int, *, special: bool = False) -> bytes:
        """The bytes one token stands for (special tokens render as nothing unless ``special``)."""
        buf = ctypes.create_string_buffer(64)
        n = ll.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = ll.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    @property
    def bos(self) -> int:
        return int(ll.llama_vocab_bos(self._vocab))

    def is_eog(self, token: int) -> bool:
        return bool(ll.llama_vocab_is_eog(self._vocab, token))

    def _special_text(self, token: int) -> str:
        if token < 0:
            return ""
        buf = ctypes.create_string_buffer(64)
        n = ll.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    # -- context (scheduler thread only) -----------------------------------------
    def decode(self, tokens: Sequence[BatchToken]) -> int:
        """One ``llama_decode`` of a mixed batch; returns its status (0 = ok, 1 = KV cache full)."""
        if not 0 < len(tokens) <= self.n_batch:
            raise ValueError(f"batch of {len(tokens)} tokens (1..{self.n_batch} allowed)")
        b = self._batch
        for i, t in enumerate(tokens):
            b.token[i] = t.token
            b.pos[i] = t.pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = t.seq
            b.logits[i] = 1 if t.logits else 0
        b.n_tokens = len(tokens)
        return int(ll.llama_decode(self._ctx, b))

    def set_threads(self, n: int) -> None:
        """Compute the next steps (decode and prefill alike) with ``n`` threads."""
        ll.llama_set_n_threads(self._ctx, n, n)

    def logits(self, index: int) -> np.ndarray | None:
        """A copy of the last decode's logits for its ``index``-th batch entry (``n_vocab`` floats).

        Only entries decoded with ``logits=True`` have them; None where llama.cpp has none.
        """
        ptr = ll.llama_get_logits_ith(self._ctx, index)
        if not ptr:
            return None
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def seq_rm(self, seq: int, start: int = 0) -> bool:
        """Drop ``seq``'s KV from position ``start`` on (0: the whole sequence)."""
        return bool(ll.llama_memory_seq_rm(self._mem, seq, start, -1))

    def close(self) -> None:
        if self._ctx:
            ll.llama_batch_free(self._batch)
            ll.llama_free(self._ctx)
            ll.llama_model_free(self._model)
            self._ctx = None
            self._model = None
