"""The thread that owns the llama.cpp context and runs every session's generation in one batch.

llama.cpp contexts are not thread-safe, so exactly one thread touches the context. Callers hand
it requests (already tokenized) through a command list guarded by a condition variable; it waits
on that condition while there is no work (no polling). Each step decodes the next token of every
generating session plus a chunk of waiting prompts in one ``llama_decode`` (continuous
batching), samples each sequence with its own sampler chain and pushes text pieces into each
request's queue, where the caller's iterator blocks. The decisions (who decodes, prefill chunks,
sequence ownership, KV reuse) come from ``llm_batching``. A request whose ``lead`` says its reply is
``defer_ahead_s`` or more ahead of its listener sits out the steps another request needs, and every
step while a reply's first audio is being synthesized (``first_audio``: the cores are the listener's).

A request may carry the end-of-message probe (``probe.py``): the prefill chunks holding its tokens
ask llama.cpp for those entries' logits too (extra output rows; sampling reads rows by batch
index, so nothing shifts), and the request reports the probe once, or None if it ends first. With
``probe_step``, a request alone in the step ends the chunk holding the probe's last row there: the
probe is reported a step before the template's tail is read (a turn's end waits on it; the reply's
first token, one short step more). Beside other requests it is not split.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from voicechat.engines.first_audio import FirstAudio
from voicechat.engines.protocols import EngineError
from voicechat.llm.batching import (
    AdmissionQueue,
    PrefillWant,
    SequencePool,
    kept_after_discard,
    plan_step,
    reusable_prefix,
)
from voicechat.llm.llama_context import BatchToken, LlamaContext, Sampler
from voicechat.llm.requests import EventKind, GenRequest, LlmEvent, LlmStats, StreamEnd
from voicechat.llm.text import StopMatcher
from voicechat.llm.threads import StepThreadsOnContext
from voicechat.llm.work import WorkCounters

__all__ = ["BatchScheduler", "GenRequest", "LlmEvent", "LlmStats", "StreamEnd"]

log = logging.getLogger(__name__)

MAKE_WAY_S = 0.5  # the longest the replies sit out for one first audio


class BatchScheduler:
    """Continuous batching over one ``LlamaContext``; see the module docstring."""

    def __init__(self, ctx: LlamaContext, *, prefill_chunk: int, defer_ahead_s: float = 0.0,
                 first_audio: FirstAudio | None = None, threads: StepThreadsOnContext | None = None,
                 probe_step: bool = True, on_event: Callable[[LlmEvent], None] | None = None) -> None:
        self._ctx = ctx
        self._probe_step = probe_step  # a prefill chunk ends at the probe's last row (``prefill_wanted``)
        self._threads = threads  # None: the context's threads for every step
        self._prefill_chunk = prefill_chunk
        self._defer_ahead_s = defer_ahead_s  # a reply this far ahead of its listener waits for others; 0 = never
        self._first_audio = first_audio
        if first_audio is not None:
            first_audio.on_idle(self._wake)
        self._on_event = on_event
        self._cond = threading.Condition()
        self._commands: list[tuple[str, str, GenRequest | None]] = []
        self._current: dict[str, GenRequest] = {}  # newest unfinished request per session
        self._latest: dict[str, GenRequest] = {}  # newest request per session, finished or not (for discard)
        self._closing = False
        # Scheduler-thread state.
        self._pool = SequencePool(ctx.n_seq_max)
        self._waiting: AdmissionQueue[GenRequest] = AdmissionQueue()
        self._active: list[GenRequest] = []  # admission order = prefill order
        self._cache: dict[str, list[int]] = {}  # idle sessions' tokens in their sequence's KV
        self._last_prefill: dict[str, int] = {}
        self._work = WorkCounters()
        self._thread = threading.Thread(target=self._run, name="llm-scheduler", daemon=True)
        self._thread.start()

    # -- any thread ------------------------------------------------------------------
    def submit(self, req: GenRequest) -> None:
        with self._cond:
            if self._closing:
                raise EngineError("the language model is shut down")
            old = self._current.get(req.session_id)
            if old is not None:  # one generation per session: a new turn ends the old one
                self._mark_aborted(old)
            self._current[req.session_id] = req
            self._latest[req.session_id] = req
            self._commands.append(("submit", req.session_id, req))
            self._cond.notify()

    def idle(self) -> bool:
        """No request is waiting or running (a moment's view: others may submit right after)."""
        with self._cond:
            return not self._current and not self._commands

    def abort(self, session_id: str) -> None:
        with self._cond:
            req = self._current.get(session_id)
            if req is not None:
                self._abort_locked(req)

    def abort_request(self, req: GenRequest) -> None:
        """Abort ``req`` if it is still its session's current request (its caller stopped reading)."""
        with self._cond:
            if self._current.get(req.session_id) is req:
                self._abort_locked(req)

    def _abort_locked(self, req: GenRequest) -> None:
        self._mark_aborted(req)
        self._commands.append(("abort", req.session_id, req))
        self._cond.notify()

    def discard(self, req: GenRequest) -> None:
        """Abort ``req`` and forget it, if it is still its session's latest request (else do nothing).

        The session's cached KV is cut back to what it shares with the KV ``req`` started from,
        so its next turn reuses nothing ``req`` prefilled or generated, finished or not.
        """
        with self._cond:
            if self._latest.get(req.session_id) is not req:
                return
            del self._latest[req.session_id]
            if self._current.get(req.session_id) is req:  # not ended yet
                del self._current[req.session_id]
                self._mark_aborted(req)
            self._commands.append(("discard", req.session_id, req))
            self._cond.notify()

    def release(self, session_id: str) -> None:
        with self._cond:
            self._latest.pop(session_id, None)
            req = self._current.pop(session_id, None)
            if req is not None:
                self._mark_aborted(req)
            self._commands.append(("release", session_id, None))
            self._cond.notify()

    def close(self, timeout: float = 10.0) -> bool:
        """Stop the thread (open streams end with an error); False if it did not stop in time."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("LLM scheduler did not stop within %.0f s", timeout)
            return False
        return True

    def stats(self) -> LlmStats:
        with self._cond:
            return self._work.snapshot(
                active=len(self._active),
                queued=len(self._waiting) + sum(1 for kind, _, _ in self._commands if kind == "submit"),
                cached_sessions=len(self._cache),
                replies=sum(1 for r in self._active if r.params.max_tokens > 1)
                + sum(1 for r in self._waiting if r.params.max_tokens > 1)
                + sum(1 for kind, _, r in self._commands if kind == "submit" and r and r.params.max_tokens > 1),
            )

    def last_prefill_tokens(self, session_id: str) -> int | None:
        """Prompt tokens the session's latest turn had to prefill (the rest came from its cached KV)."""
        with self._cond:
            return self._last_prefill.get(session_id)

    @staticmethod
    def _mark_aborted(req: GenRequest) -> None:
        """End the caller's iterator now; the scheduler drops the work at its next step."""
        if not req.aborted:
            req.aborted = True
            req.out.put(StreamEnd())

    # -- scheduler thread ----------------------------------------------------------
    def _run(self) -> None:
        try:
            while self._next_commands():
                self._admit()
                if self._active:
                    self._step()
        except Exception:  # a bug or a broken context: fail every caller instead of hanging them
            log.exception("LLM scheduler failed")
        finally:
            stopped = EngineError("the language model stopped")
            for req in list(self._active):
                self._finish(req, "error", stopped)
            for req in self._waiting.drain():
                self._end(req, stopped)
            with self._cond:
                self._closing = True
                for req in self._current.values():
                    self._mark_aborted(req)
                self._current.clear()
                unseen, self._commands = self._commands, []
            for _, _, req in unseen:
                if req is not None:
                    req.report_probe(None)

    def _next_commands(self) -> bool:
        """Apply queued commands, waiting for some while idle; False once closing."""
        with self._cond:
            while not self._commands and not self._active and not self._closing:
                self._cond.wait()
            if self._closing:
                return False
            commands, self._commands = self._commands, []
        for kind, session_id, req in commands:
            if kind == "submit" and req is not None and req.aborted:
                req.report_probe(None)  # ended before the scheduler saw it
            elif kind == "submit" and req is not None:
                replaced = self._waiting.push(session_id, req)
                if replaced is not None:
                    self._end(replaced)
            elif kind == "abort" and req is not None:
                self._drop(req)
            elif kind == "discard" and req is not None:
                self._discard(req)
            elif kind == "release":
                self._release(session_id)
        # Requests replaced by a newer turn of the same session.
        for req in [r for r in self._active if r.aborted]:
            self._finish(req, "aborted")
        return True

    def _drop(self, req: GenRequest) -> None:
        if req in self._active:
            self._finish(req, "aborted")
        elif self._waiting.get(req.session_id) is req:
            self._waiting.remove(req.session_id)
            self._end(req)

    def _discard(self, req: GenRequest) -> None:
        """Drop ``req`` (it finishes as aborted); if the session's cache is its KV, cut it back."""
        self._drop(req)
        cached = self._cache.get(req.session_id)
        seq = self._pool.seq_of(req.session_id)
        if cached is not None and cached is req.kv and seq is not None:  # else never admitted, or evicted
            keep = kept_after_discard(cached, req.started_from)
            if keep < len(cached) and not self._ctx.seq_rm(seq, keep):
                self._ctx.seq_rm(seq)
                keep = 0
            self._cache[req.session_id] = cached[:keep]
        self._emit("discarded", req.session_id, len(self._cache.get(req.session_id, ())))

    def _release(self, session_id: str) -> None:
        for req in [r for r in self._active if r.session_id == session_id]:
            self._finish(req, "aborted")
        waiting = self._waiting.remove(session_id)
        if waiting is not None:
            self._end(waiting)
        seq = self._pool.release(session_id)
        if seq is not None:
            self._ctx.seq_rm(seq)
        self._cache.pop(session_id, None)
        with self._cond:
            self._last_prefill.pop(session_id, None)

    def _admit(self) -> None:
        for req, grant in self._waiting.admit(self._pool):
            if grant.evicted is not None:
                self._ctx.seq_rm(grant.seq)
                self._cache.pop(grant.evicted, None)
                self._emit("evicted", grant.evicted)
            cached = self._cache.pop(req.session_id, [])
            had = len(cached)
            first_probe_row = req.probe.word_at if req.probing and req.probe is not None else None
            keep = reusable_prefix(cached, req.prompt, decode_from=first_probe_row)
            if keep < len(cached) and not self._ctx.seq_rm(grant.seq, keep):
                self._ctx.seq_rm(grant.seq)
                keep, cached = 0, []
            req.seq, req.kv, req.pending = grant.seq, req.prompt[:keep], req.prompt[keep:]
            req.started_from = cached  # a discard keeps no more of req's KV than it shares with this
            req.sampler = Sampler(req.params, self._ctx.n_vocab)
            req.stops = StopMatcher(req.params.stop)
            self._active.append(req)
            with self._cond:
                self._last_prefill[req.session_id] = len(req.pending)
                self._work.admitted(len(req.pending), keep, had - keep)
            self._emit("admitted", req.session_id, len(req.pending), f"reused={keep}")

    def _step(self) -> None:
        by_session = {r.session_id: r for r in self._active}  # one active request per session
        decoding = [r for r in self._active if r.next_token is not None]
        # The probe's own step only where the request steps alone: beside others, one more shared step would
        # delay its first token as much as it brings the probe forward (docs/benchmarks.md, session 38).
        probe_step = self._probe_step and len(self._active) == 1
        prefilling = [PrefillWant(r.session_id, r.prefill_wanted(probe_step)) for r in self._active if r.pending]
        ahead = set()  # asked only where deferring could help somebody
        make_way = self._first_audio is not None and self._first_audio.busy()
        if self._defer_ahead_s > 0 and (len(decoding) + bool(prefilling) > 1 or make_way):
            ahead = {r.session_id for r in decoding if r.ahead_by(self._defer_ahead_s)}
        plan = plan_step([r.session_id for r in decoding], prefilling, batch_size=self._ctx.n_batch,
                         prefill_budget=self._prefill_chunk, ahead=ahead, make_way=make_way)
        if not plan.n_tokens:  # every reply is ahead and a first audio is being made: wait until it is
            self._wait_for_first_audio(len(plan.deferred))
            return
        if plan.deferred:
            decoding = [by_session[key] for key in plan.decode]
        batch: list[BatchToken] = []
        outputs: list[tuple[GenRequest, int]] = []
        for req in decoding:
            assert req.next_token is not None
            outputs.append((req, len(batch)))
            batch.append(BatchToken(req.next_token, len(req.kv), req.seq, logits=True))
        chunks: list[tuple[GenRequest, list[int]]] = []
        probes: list[tuple[GenRequest, int, int]] = []  # (request, prompt index, batch index) of probe rows
        for session_id, n in plan.prefill:
            req = by_session[session_id]
            chunk = req.pending[:n]
            last = n == len(req.pending)  # the prompt's final chunk: its last token gives the logits
            # The prompt index of chunk[i] is len(req.kv) + i (the KV holds the prompt's first tokens).
            rows = req.probe.rows() if req.probing and req.probe is not None else ()
            for i, token in enumerate(chunk):
                read = len(req.kv) + i in rows
                if read:
                    probes.append((req, len(req.kv) + i, len(batch)))
                batch.append(BatchToken(token, len(req.kv) + i, req.seq, logits=(last and i == n - 1) or read))
            if last:
                outputs.append((req, len(batch) - 1))
            chunks.append((req, chunk))
        alone = (self._threads is not None
                 and self._threads.before_step(len(batch), len(self._active)) > self._threads.policy.shared)
        t0 = time.perf_counter()
        rc = self._ctx.decode(batch)
        elapsed = time.perf_counter() - t0
        if self._threads is not None:
            self._threads.after_step()
        if rc != 0:
            self._decode_failed(rc, [r for r, _ in outputs] + [r for r, _ in chunks])
            return
        for req, at, index in probes:  # before sampling: a reply that ends now must not report None first
            req.read_probe(at, self._ctx.logits(index))
        for req in decoding:
            req.kv.append(req.next_token)  # type: ignore[arg-type]
            req.next_token = None
        for req, chunk in chunks:
            req.kv.extend(chunk)
            del req.pending[: len(chunk)]
        sampled = 0
        for req, index in outputs:
            if req.aborted:
                self._finish(req, "aborted")
            else:
                assert req.sampler is not None
                self._on_token(req, req.sampler.sample(self._ctx, index))
                sampled += 1
        with self._cond:
            self._work.stepped(elapsed, sampled, sum(len(c) for _, c in chunks), len(plan.deferred), alone)

    def _wait_for_first_audio(self, deferred: int) -> None:
        """Sleep until the synthesis ends (``FirstAudio.on_idle`` notifies), a command comes, or at most
        ``MAKE_WAY_S`` (a stuck synthesis must not hold the replies)."""
        with self._cond:
            self._work.deferred += deferred
            if not self._commands and not self._closing and self._first_audio is not None:
                self._cond.wait_for(lambda: self._commands or self._closing or not self._first_audio.busy(),
                                    MAKE_WAY_S)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def _on_token(self, req: GenRequest, token: int) -> None:
        req.generated += 1
        req.last_token = token
        self._emit("token", req.session_id, token)
        if self._ctx.is_eog(token) and not req.params.ignore_eos:
            self._finish(req, "eog")
            return
        assert req.stops is not None
        text = req.stops.feed(req.text.feed(self._ctx.piece(token)))
        if text:
            req.out.put(text)
        if req.stops.stopped:
            self._finish(req, "stop")
        elif req.generated >= req.params.max_tokens:
            self._finish(req, "length")
        elif len(req.kv) + 1 > self._ctx.n_ctx_seq:  # no position left for this token
            log.warning("session %s: reply cut at the end of the context (llm.n_ctx)", req.session_id)
            self._finish(req, "context")
        else:
            req.next_token = token

    def _decode_failed(self, rc: int, reqs: list[GenRequest]) -> None:
        if rc == 1:  # no room in the KV cache: drop idle sessions' caches, else the biggest request
            freed = self._pool.evict_idle()
            if freed is not None:
                key, seq = freed
                self._ctx.seq_rm(seq)
                self._cache.pop(key, None)
                self._emit("evicted", key)
                return  # the next step retries
            victim = max(self._active, key=lambda r: len(r.kv) + len(r.pending))
            log.warning("session %s: KV cache full with every sequence busy", victim.session_id)
            self._fail(victim, EngineError("the language model's context is full: raise llm.n_ctx"))
            return
        for req in dict.fromkeys(reqs):
            self._fail(req, EngineError(f"llama_decode failed with status {rc}"))

    def _fail(self, req: GenRequest, error: EngineError) -> None:
        """End a request whose sequence state is uncertain: its KV is cleared, not cached."""
        self._ctx.seq_rm(req.seq)
        req.kv = []
        self._finish(req, "error", error)

    def _finish(self, req: GenRequest, reason: str, error: EngineError | None = None) -> None:
        if req.done:
            return
        if reason in ("eog", "length", "context") and req.stops is not None:
            tail = req.stops.feed(req.text.flush()) + req.stops.flush()
            if tail:
                req.out.put(tail)
        if req.sampler is not None:
            req.sampler.close()
            req.sampler = None
        self._active.remove(req)
        self._cache[req.session_id] = req.kv
        self._pool.finish(req.session_id)
        self._end(req, error)
        self._emit("finished", req.session_id, req.generated, reason)

    def _end(self, req: GenRequest, error: EngineError | None = None) -> None:
        req.done = True
        req.report_probe(None)  # it ended before its prefill reached the probe (else: already reported)
        if not req.aborted:
            req.out.put(StreamEnd(error))
        with self._cond:
            if self._current.get(req.session_id) is req:
                del self._current[req.session_id]

    def _emit(self, kind: EventKind, session_id: str, value: int = 0, detail: str = "") -> None:
        if self._on_event is not None:
            try:
                self._on_event(LlmEvent(kind, session_id, value, detail))
            except Exception:
                log.exception("LLM event listener failed")
