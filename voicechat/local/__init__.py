"""The local user: microphone and speaker (or WAV files) as one more session, the echo gate,
the text console and the terminal UI (``tui/``).
"""
