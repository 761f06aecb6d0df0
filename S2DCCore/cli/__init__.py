"""The ``s2dc`` command line: thin parsers over the Python API (torch is imported only by commands that need it)."""
