"""The gRPC API: mutual TLS, roles, and the JobService on top of the runner.

Clients authenticate with certificates from the deployment's own CA (``certs``), which
also carry their role; every call is authorized from that identity before it reaches the
runner. No other layer knows about gRPC, TLS or users.
"""
