"""The ``jobworker`` command: the one entry point people use, for the server and the client."""
