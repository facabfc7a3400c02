"""The pure core: turn state, history, reply tracking, sentences, events and jobs.

Nothing here starts a thread, opens a socket, runs a subprocess or imports an
engine library (``tests/core/test_purity.py`` enforces it), so every rule can be
tested on plain values.
"""
