"""bench echo's scoring of the users' transcripts (pure): against what was said and against the clean run."""

from __future__ import annotations

import numpy as np

from voicechat.bench.echo import transcript_scores

SAID = ["How do bees make honey?", "What is the tallest mountain in the world?", "How fast can a horse run?"]


def test_the_echo_stage_is_charged_only_with_what_the_clean_run_got_right() -> None:
    heard = [(text, np.zeros(1, np.float32)) for text in SAID]
    clean = {SAID[0]: "How do bees make honey?", SAID[1]: "What is the tallest mountain in the world?",
             SAID[2]: "How fast can it always run?"}  # the recogniser's own miss, without any echo
    over_echo = ["how do bees make honey", "What is the tallest mountain?", "How fast can it always run?"]
    scores = transcript_scores(heard, over_echo, clean)
    assert scores["transcripts_exact"] == "1/3"
    assert scores["exact_where_clean_exact"] == "1/2"  # the cut question is the echo's doing, the horse is not
    assert scores["wer_percent"] == round(100 * (3 + 2) / 19, 1)  # "in the world" lost, "a horse" -> "it always"
