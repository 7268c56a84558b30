"""The ``jobworker`` command: the one entry point people use, for the server and the client.

``main`` is the entry point and ``_parser`` the whole command line; each command's handler
lives in a module of its own (``_serve``, ``_checkhost``, ``_certs``, ``_client``), which
``main`` imports only when that command runs.
"""
