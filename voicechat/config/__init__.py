"""Configuration: the schema (``schema``), its layered sources (``sources``) and loading (``loading``)."""
