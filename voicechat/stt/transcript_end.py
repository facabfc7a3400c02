"""The words' signal: how likely a transcript is a finished turn, from its last word and punctuation.

Pure: plain strings in, a score in [0, 1] out (not a calibrated probability, a ranking that
``turn_end.py`` compares with a threshold). Two things Whisper gives us for free carry most of it:

* the **trailing punctuation** Whisper writes: "?" and "!" end a turn, "." mostly does; "...", ",",
  ";", ":", "-" or no mark at all say that the speaker was cut off (on the evidence set Whisper
  tiny.en left the mark off 18 of 34 fragments and 2 of 34 whole sentences, Piper joe);
* the **last word**: a sentence cannot end on an article, a possessive, a conjunction, "to" or a
  filler ("I would like to ...", "a table for the ..."), and rarely ends on an auxiliary or a
  preposition, except questions that strand one ("Where are you from?", "What is it for?").

The last word overrides the punctuation: Whisper often closes a fragment with "." anyway.
Its weakness (``bench turns``): Whisper often completes a fragment it hears cut off ("Please remind
me to buy" -> "Please remind me to buy it."), which no rule on the text can see. The LLM's own
view that the turn is over there (``llm.probe``) measured better.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Words after which an English sentence goes on (the last word of a fragment, never of a turn).
NEVER_LAST = frozenset("""
a an the my your our their its his
and or but nor because although though unless whereas if than
to of
um uh er erm ah eh hmm mm uhm
""".split())
# Words a sentence rarely ends on: prepositions (unless stranded in a question; not the particles of
# "turn it on", "come in", "seen it before"), subject pronouns, intensifiers.
RARELY_LAST = frozenset("""
at for from with about into onto under between as like until toward towards
i we they he she i'm you're we're they're it's that's there's let's
very every also
""".split())
# Auxiliaries end short answers ("Yes, I can.", "Where is it? Do you know where it is?") but mostly fragments.
AUXILIARY = frozenset("""
is are was were am be been being do does did have has had will would can could shall should may might must
""".split())
QUESTION_WORDS = frozenset("what who where when why how which whose whom".split())
STRANDABLE = frozenset("at for from with about to of into like".split())

_WORD = re.compile(r"[a-z0-9']+")
_TRAILING = re.compile(r"[\s\"')\]]*$")


@dataclass(frozen=True)
class WordsEnd:
    """Finished-turn scores for the cases above; ``turn_end.TurnEndRules`` holds the threshold."""

    question: float = 0.95  # "?" or "!"
    full_stop: float = 0.85  # "."
    no_mark: float = 0.3  # no mark: Whisper (utterance window) leaves it off most fragments (`bench turns`)
    trailing_off: float = 0.15  # "...", "…", ",", ";", ":", "-"
    never_last: float = 0.02  # last word in NEVER_LAST, whatever the punctuation
    rarely_last: float = 0.2  # last word in RARELY_LAST (at most; a stranded preposition in a question excepted)
    auxiliary: float = 0.4  # last word in AUXILIARY (at most)


DEFAULT = WordsEnd()


def words(text: str) -> list[str]:
    """Lower-case words of ``text`` (apostrophes kept, other punctuation dropped)."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def end_mark(text: str) -> str:
    """The transcript's trailing punctuation class: "?", ".", "..." (any trailing-off mark) or ""."""
    body = _TRAILING.sub("", text.strip())
    if body.endswith(("...", "\u2026")):
        return "..."
    if body.endswith(("?", "!")):
        return "?"
    if body.endswith("."):
        return "."
    if body.endswith((",", ";", ":", "-", "\u2014", "\u2013")):
        return "..."
    return ""


def words_score(text: str, scores: WordsEnd = DEFAULT) -> float | None:
    """How likely ``text`` (a transcript, Whisper's punctuation included) ends a turn, in [0, 1];
    None when it holds no word (nothing to judge)."""
    said = words(text)
    if not said:
        return None
    mark = end_mark(text)
    score = {"?": scores.question, ".": scores.full_stop, "...": scores.trailing_off}.get(mark, scores.no_mark)
    last = said[-1]
    if last in NEVER_LAST and not (last in STRANDABLE and _stranded(said, mark)):
        return min(score, scores.never_last)
    if last in RARELY_LAST and not (last in STRANDABLE and _stranded(said, mark)):
        return min(score, scores.rarely_last)
    if last in AUXILIARY:
        return min(score, scores.auxiliary)
    return score


def _stranded(said: list[str], mark: str) -> bool:
    """A question that ends on its preposition: "Where are you from?", "What is this for?"."""
    return mark == "?" and len(said) >= 3 and said[0] in QUESTION_WORDS
