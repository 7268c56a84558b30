"""The gRPC API: mutual TLS, roles, and the JobService on top of the runner.

Clients authenticate with certificates from the deployment's own CA (``authority``),
which also carry their user and role (read on every call by ``_identity``); every call is
refused if its certificate is revoked (``_revocation``), and authorized from that
identity before it reaches the runner. No other layer knows about gRPC, TLS or users.

The public modules are ``server`` (``serve``, ``ServerConfig``, ``TlsFiles``), ``authority``
(the CA: init, issue, revoke), ``roles`` (``Role`` and the first admin's name),
``streams`` (the default bounds on output streams), ``pages`` (the bounds of a job
listing's pages) and ``errors`` (every error this layer raises).
"""
