"""One conversation's life: the registry (``manager``), its records, the per-session
pipeline of stage workers (``pipeline``, ``stages/``), the queue between them and
the conversation journal.
"""
