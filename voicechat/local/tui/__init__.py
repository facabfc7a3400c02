"""The terminal UI: keys in (``keys``), a pure model of what is shown (``model``),
rendering (``view``) and the app loop (``app``).
"""
