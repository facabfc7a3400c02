"""Model files: the registry of recommended models, where they live, their checks,
downloads and the ``models`` command; ``tiny/`` makes the tiny random ones the tests use.
"""
