"""``jobworker certs init`` and ``jobworker certs issue``: the deployment's certificates.

A thin layer over ``jobworker.api.certs``, which does the cryptography; this
resolves the directory like every other command does and prints what was written.
"""

from __future__ import annotations

import argparse

from jobworker.api.certs import CertificateError, InvalidName, Role, init_authority, issue_client
from jobworker.cli import defaults
from jobworker.cli.errors import CliError, UsageError


def init(args: argparse.Namespace) -> int:
    """Create the CA, the server's certificate and the ``admin`` client's."""
    directory = defaults.tls_dir(args.dir)
    try:
        written = init_authority(directory, extra_server_names=args.san or (), force=args.force)
    except InvalidName as error:
        raise UsageError(str(error)) from None
    except CertificateError as error:
        raise CliError(str(error)) from None
    for path in written:
        print(path)
    return 0


def issue(args: argparse.Namespace) -> int:
    """Issue ``NAME.crt`` and ``NAME.key`` for a user with a role, signed by the CA."""
    directory = defaults.tls_dir(args.dir)
    try:
        written = issue_client(directory, args.user, Role(args.role), force=args.force)
    except InvalidName as error:
        raise UsageError(str(error)) from None
    except CertificateError as error:
        raise CliError(str(error)) from None
    for path in written:
        print(path)
    return 0
