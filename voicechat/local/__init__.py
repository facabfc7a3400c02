"""The local user: microphone and speaker (or WAV files) as one more session, the echo canceller and the
echo gate, the simulated room (tests, ``bench echo``), the text console and the terminal UI (``tui/``).
"""
