"""Configuration: the schema (``schema``; the pipeline stages' sections in ``stages``), its layered sources
(``sources``) and loading (``loading``).
"""
