"""``jobworker certs init|issue|revoke``: the deployment's certificates.

A thin layer over ``jobworker.api.authority``, which does the cryptography; this
resolves the TLS and CA directories like every other command does and prints what
was written or revoked.
"""

from __future__ import annotations

import argparse
import sys

from jobworker.api.authority import init_authority, issue_client, revoke
from jobworker.api.errors import CertificateError, InvalidName
from jobworker.api.roles import Role
from jobworker.cli import _defaults as defaults
from jobworker.cli._errors import CliError, UsageError


def init(args: argparse.Namespace) -> int:
    """Create the CA in the CA directory, and the server's and ``admin``'s certificates."""
    tls_dir, ca_dir = defaults.tls_dir(args.dir), defaults.ca_dir(args.ca_dir)
    try:
        written = init_authority(
            tls_dir, ca_dir, extra_server_names=args.san or (), force=args.force
        )
    except InvalidName as error:
        raise UsageError(str(error)) from None
    except CertificateError as error:
        raise CliError(str(error)) from None
    for path in written:
        print(path)
    return 0


def issue(args: argparse.Namespace) -> int:
    """Issue ``NAME.crt`` and ``NAME.key`` for a user with a role, signed by the CA."""
    tls_dir, ca_dir = defaults.tls_dir(args.dir), defaults.ca_dir(args.ca_dir)
    try:
        written = issue_client(tls_dir, ca_dir, args.user, Role(args.role), force=args.force)
    except InvalidName as error:
        raise UsageError(str(error)) from None
    except CertificateError as error:
        raise CliError(str(error)) from None
    for path in written:
        print(path)
    return 0


def revoke_certificates(args: argparse.Namespace) -> int:
    """Revoke a user's certificates, or one by serial; say how the server learns of it."""
    tls_dir, ca_dir = defaults.tls_dir(args.dir), defaults.ca_dir(args.ca_dir)
    try:
        done = revoke(tls_dir, ca_dir, args.which)
    except CertificateError as error:
        raise CliError(str(error)) from None
    for certificate in done.revoked:
        print(f"revoked {certificate.describe()}", flush=True)  # before the note on stderr
    lists = " and ".join(str(path) for path in done.written)
    which = "it" if len(done.revoked) == 1 else "them"
    print(
        f"jobworker: wrote {lists}; the server refuses {which} from the next call once it "
        "has reloaded the list: `systemctl reload jobworker`, or "
        "`kill -HUP <pid of jobworker server>`",
        file=sys.stderr,
    )
    return 0
