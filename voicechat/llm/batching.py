"""Scheduling policy of the shared llama.cpp context: pure decisions, no threads, no llama.cpp.

The scheduler thread only carries out what these functions decide: which sequences decode this
step and how much prompt is prefilled beside them, which session gets which llama.cpp sequence,
whose cached KV is evicted when all are taken, how much of a session's cached KV a new turn keeps,
and which messages go when a conversation outgrows the context. Keeping the decisions here lets
them be tested without a model.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from voicechat.core.history import ChatMessage

T = TypeVar("T")


# -- one step ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PrefillWant:
    """A sequence that still has ``remaining`` prompt tokens to prefill."""

    key: str
    remaining: int


@dataclass(frozen=True, slots=True)
class StepPlan:
    decode: tuple[str, ...]
    prefill: tuple[tuple[str, int], ...]  # (key, tokens this step)
    deferred: tuple[str, ...] = ()  # generating sequences that sit this step out (far ahead of their listener)

    @property
    def n_tokens(self) -> int:
        return len(self.decode) + sum(n for _, n in self.prefill)


def plan_step(
    decoding: Sequence[str],
    prefilling: Sequence[PrefillWant],
    *,
    batch_size: int,
    prefill_budget: int,
    ahead: Collection[str] = (),
    make_way: bool = False,
) -> StepPlan:
    """Every generating sequence decodes its next token; prompts share what is left of the batch.

    Decoding goes first so that a long prompt never stalls other sessions' replies: the prompt is
    prefilled in chunks of at most ``prefill_budget`` tokens per step, which bounds how much one
    step (and so everybody's next token) can be delayed. Prompts are served first come, first
    served, which finishes the oldest prompt soonest (the best time to first token on average).

    ``ahead``: decoding sequences whose reply is far enough ahead of its listener to wait. They sit
    the step out (``deferred``) while anybody else is in it (another sequence decoding, a prompt being
    prefilled: somebody is waiting for a reply), because on a CPU a step's cost grows with its tokens
    (docs/benchmarks.md). Alone, they decode: no step is wasted. With ``make_way`` (the cores are
    wanted outside the model: a reply's first audio being synthesized) they sit out alone too, so the
    plan may be empty.
    """
    if len(decoding) > batch_size:
        raise ValueError(f"{len(decoding)} decoding sequences exceed the batch size {batch_size}")
    if prefill_budget < 1:
        raise ValueError("prefill_budget must be at least 1")
    deferred: tuple[str, ...] = ()
    if ahead:
        waiting = [key for key in decoding if key not in ahead]
        if waiting or prefilling or make_way:
            deferred = tuple(key for key in decoding if key in ahead)
            decoding = waiting
    room = min(prefill_budget, batch_size - len(decoding))
    prefill: list[tuple[str, int]] = []
    for want in prefilling:
        if room <= 0:
            break
        take = min(want.remaining, room)
        if take > 0:
            prefill.append((want.key, take))
            room -= take
    return StepPlan(tuple(decoding), tuple(prefill), deferred)


# -- sequences -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Grant:
    """A sequence handed to a session; ``evicted`` names the idle session whose KV must go first."""

    seq: int
    evicted: str | None = None


class SequencePool:
    """Which session owns which llama.cpp sequence.

    A session keeps its sequence between turns (the sequence's KV is that session's cache), idle
    or busy, until it is released. When every sequence is taken, the least recently used *idle*
    one is reassigned (its cache evicted); busy ones are never taken away.
    """

    def __init__(self, n_seq: int) -> None:
        if n_seq < 1:
            raise ValueError("n_seq must be at least 1")
        self._free = list(range(n_seq - 1, -1, -1))  # pop() hands out 0 first
        self._seq: dict[str, int] = {}
        self._busy: set[str] = set()
        self._idle: OrderedDict[str, None] = OrderedDict()  # least recently used first

    def seq_of(self, key: str) -> int | None:
        return self._seq.get(key)

    @property
    def busy_count(self) -> int:
        return len(self._busy)

    @property
    def idle_keys(self) -> list[str]:
        return list(self._idle)

    def acquire(self, key: str) -> Grant | None:
        """A sequence for ``key``'s next generation, or None when all are busy."""
        if key in self._busy:
            raise ValueError(f"session {key!r} already has a running generation")
        if key in self._seq:
            self._idle.pop(key)
            self._busy.add(key)
            return Grant(self._seq[key])
        evicted: str | None = None
        if self._free:
            seq = self._free.pop()
        elif self._idle:
            evicted, _ = self._idle.popitem(last=False)
            seq = self._seq.pop(evicted)
        else:
            return None
        self._seq[key] = seq
        self._busy.add(key)
        return Grant(seq, evicted)

    def finish(self, key: str) -> None:
        """``key``'s generation ended; its sequence stays as its cache, most recently used."""
        if key in self._busy:
            self._busy.remove(key)
            self._idle[key] = None

    def release(self, key: str) -> int | None:
        """``key`` is gone: its sequence becomes free (returned, so its KV can be cleared)."""
        seq = self._seq.pop(key, None)
        if seq is not None:
            self._busy.discard(key)
            self._idle.pop(key, None)
            self._free.append(seq)
        return seq

    def evict_idle(self) -> tuple[str, int] | None:
        """Free the least recently used idle session's sequence (the KV cache is full)."""
        if not self._idle:
            return None
        key, _ = self._idle.popitem(last=False)
        seq = self._seq.pop(key)
        self._free.append(seq)
        return key, seq


class AdmissionQueue(Generic[T]):
    """Requests waiting for a sequence, admitted strictly first come, first served.

    A session has at most one waiting request: a newer one replaces it in place, so a session
    that asks again does not lose its turn and cannot take two places.
    """

    def __init__(self) -> None:
        self._items: OrderedDict[str, T] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._items.values()))

    def push(self, key: str, item: T) -> T | None:
        """Queue ``item``; return the request it replaced, if any."""
        old = self._items.get(key)
        self._items[key] = item
        return old

    def get(self, key: str) -> T | None:
        return self._items.get(key)

    def remove(self, key: str) -> T | None:
        return self._items.pop(key, None)

    def drain(self) -> list[T]:
        items = list(self._items.values())
        self._items.clear()
        return items

    def admit(self, pool: SequencePool) -> Iterator[tuple[T, Grant]]:
        """Pop requests from the head while the pool has sequences for them."""
        while self._items:
            key = next(iter(self._items))
            grant = pool.acquire(key)
            if grant is None:
                return
            yield self._items.pop(key), grant


# -- KV reuse and context limits -----------------------------------------------
def reusable_prefix(cached: Sequence[int], prompt: Sequence[int], decode_from: int | None = None) -> int:
    """How many of ``prompt``'s tokens can keep the KV already in the session's sequence.

    The common prefix of what the sequence holds and the new prompt, but never the whole prompt:
    the last prompt token must be decoded again so the first reply token has fresh logits.
    ``decode_from``: a prompt index whose logits are wanted too (the end-of-message probe), so it
    is decoded again as well. Everything past the prefix diverges (an earlier reply re-tokenized,
    trimmed history) and goes.
    """
    limit = len(prompt) - 1 if decode_from is None else min(decode_from, len(prompt) - 1)
    return max(min(common_prefix(cached, prompt), limit), 0)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the longest common prefix of two token lists."""
    limit = min(len(a), len(b))
    n = 0
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def kept_after_discard(cached: Sequence[int], started_from: Sequence[int] | None) -> int:
    """How many of a session's cached KV tokens stay when its latest generation is discarded.

    ``cached`` is what the sequence holds now (the discarded request's prompt and reply);
    ``started_from`` is what it held when that request was admitted (None or empty: nothing).
    Only their common prefix was there before, so only it stays: the next turn then reuses
    nothing the discarded request prefilled or generated.
    """
    return common_prefix(cached, started_from or ())


def text_aligned_prefix(pieces: Sequence[bytes], rendered: bytes, start: int = 0,
                        control: Sequence[bool] = ()) -> tuple[int, int]:
    """How much of a sequence's tokens the new prompt can keep when compared as *text*.

    A reply's generated tokens are rarely what tokenizing its text again gives, so a
    token-by-token comparison with the next turn's prompt stops at the start of the
    previous reply and the whole reply is prefilled again. Compared by the bytes each
    token stands for (``pieces``), the rendered prompt usually continues exactly where
    the sequence ends. A piece's leading space may be missing at the start of a line
    (histories store replies stripped): the model keeps the space it generated. So may
    one after a control token (``control[i]``: piece i is one, e.g. ``<|im_start|>``),
    where SentencePiece tokenizers put one before the text that follows.
    Where the pieces stop inside a word of ``rendered`` ("far" kept, "farther" said), the
    pieces of that word go too, so the word is tokenized whole.
    Returns ``(k, offset)``: the first ``k`` pieces stand for ``rendered[start:offset]``;
    the caller tokenizes only ``rendered[offset:]``.
    """
    ends = [start]  # ends[i]: where the first i pieces end in ``rendered``
    for i, piece in enumerate(pieces):
        end = ends[-1]
        bare = piece.lstrip(b" ")
        after_control = 0 < i <= len(control) and control[i - 1]
        if rendered.startswith(piece, end):
            ends.append(end + len(piece))
        elif bare != piece and ((bare and rendered[end - 1 : end] == b"\n") or after_control) \
                and rendered.startswith(bare, end):
            ends.append(end + len(bare))
        else:
            break
    k = len(ends) - 1
    while k > 0 and _in_word(rendered, ends[k]):
        k -= 1
    return k, ends[k]


def _in_word(data: bytes, at: int) -> bool:
    """Whether ``at`` falls between two word characters of ``data`` (letters, digits, any non-ASCII byte)."""
    if at <= 0 or at >= len(data):
        return False
    return _word_byte(data[at - 1]) and _word_byte(data[at])


def _word_byte(byte: int) -> bool:
    return byte >= 0x80 or chr(byte).isalnum()


def reply_room(max_tokens: int, n_ctx_seq: int) -> int:
    """Context kept free for the reply: its max tokens, but at most half of the context."""
    return max(1, min(max_tokens, n_ctx_seq // 2))


def drop_oldest_turn(messages: Sequence[ChatMessage]) -> list[ChatMessage] | None:
    """The conversation without its oldest non-system message, or None when nothing can go.

    The system prompt and the newest message always stay; an assistant message left at the head
    of the turns goes too, so the history still opens with the user.
    """
    head = [m for m in messages if m.role == "system"]
    turns = [m for m in messages if m.role != "system"]
    if len(turns) <= 1:
        return None
    turns.pop(0)
    while len(turns) > 1 and turns[0].role == "assistant":
        turns.pop(0)
    return head + turns
