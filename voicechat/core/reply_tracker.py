"""Which part of a reply did the user actually hear?

On barge-in the history must keep only what was played, not what the LLM
generated. The TTS stage records how many samples each sentence produced; the
player reports how many samples it played; this maps one onto the other.
Words of a partly played sentence are kept in proportion to the part played.
Pure logic: no threads, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Typical TTS speaking rate, used before any sentence has finished.
DEFAULT_WORDS_PER_SECOND = 2.5


@dataclass(slots=True)
class _Sentence:
    text: str
    start: int | None = None  # first sample of this sentence within the reply
    samples: int = 0
    complete: bool = False


@dataclass(slots=True)
class ReplyTracker:
    """Audio spans of one reply's sentences, in order."""

    generation: int
    sample_rate: int = 16000
    _sentences: dict[int, _Sentence] = field(default_factory=dict)
    total_samples: int = 0

    def add_sentence(self, index: int, text: str) -> None:
        self._sentences[index] = _Sentence(text)

    def add_audio(self, index: int, samples: int) -> int:
        """Record ``samples`` more audio for sentence ``index``; returns its start offset."""
        sentence = self._sentences.setdefault(index, _Sentence(""))
        if sentence.start is None:
            sentence.start = self.total_samples
        offset = self.total_samples
        sentence.samples += samples
        self.total_samples += samples
        return offset

    def sentence_done(self, index: int) -> None:
        if index in self._sentences:
            self._sentences[index].complete = True

    def full_text(self) -> str:
        return " ".join(s.text for _, s in sorted(self._sentences.items()) if s.text)

    def heard_text(self, played_samples: int) -> str:
        """The text of the first ``played_samples`` samples of this reply."""
        words: list[str] = []
        for _, s in sorted(self._sentences.items()):
            if s.start is None or played_samples <= s.start:
                break
            sentence_words = s.text.split()
            played_here = played_samples - s.start
            if s.complete and played_here >= s.samples:
                words.extend(sentence_words)
                continue
            # Partly played: keep words in proportion to the audio played. A
            # sentence still being synthesized has no known length yet, so it is
            # estimated from the speaking rate of the finished sentences.
            expected = s.samples if s.complete else max(s.samples, self._estimate_samples(len(sentence_words)))
            fraction = min(1.0, played_here / max(expected, 1))
            words.extend(sentence_words[: int(len(sentence_words) * fraction)])
            break
        return " ".join(words)

    def _estimate_samples(self, n_words: int) -> int:
        done = [s for s in self._sentences.values() if s.complete and s.text]
        done_words = sum(len(s.text.split()) for s in done)
        if done_words:
            per_word = sum(s.samples for s in done) / done_words
        else:
            per_word = self.sample_rate / DEFAULT_WORDS_PER_SECOND
        return int(per_word * n_words)
