"""The gRPC API: mutual TLS, roles, and the JobService on top of the runner.

Clients authenticate with certificates from the deployment's own CA (``authority``), which
also carry their role (``certs``); every call is refused if its certificate is revoked
(``revocation``), and authorized from that identity before it reaches the runner. No
other layer knows about gRPC, TLS or users.
"""
