"""How the certificate tooling writes files: private from the first byte, never half a set.

- Keys are written mode 0600 from their first byte (never chmod-ed afterwards, which
  would leave a window); everything else (certificates, revocation lists, the index) is
  public and written 0644, in directories made 0700.
- Replacing files (``force``) goes through a temporary file and a rename, so a reader
  sees either the old file or the new one; a set of files is only renamed into place
  once every one of them has been written in full.
- ``locked`` serializes the read-modify-write of a CA directory (its index and
  revocation list), so two ``certs`` commands running at once cannot lose an update.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from jobworker.api.errors import CertificateError, CertificateFileExists

__all__ = ["locked", "make_private_directory", "refuse_existing", "write_files"]

_KEY_MODE = 0o600
_PUBLIC_MODE = 0o644
_DIRECTORY_MODE = 0o700


def refuse_existing(paths: Sequence[Path]) -> None:
    """Raise ``CertificateFileExists`` naming every one of ``paths`` that exists."""
    existing = [path for path in paths if os.path.lexists(path)]
    if existing:
        raise CertificateFileExists(existing)


def make_private_directory(directory: Path) -> None:
    """Create ``directory`` private to its owner; an existing one is left as it is."""
    try:
        directory.mkdir(mode=_DIRECTORY_MODE, parents=True)
    except FileExistsError:
        return
    except OSError as error:
        raise CertificateError(f"cannot create {directory}: {error.strerror}") from None
    # mkdir's mode is reduced by the umask; make it exactly owner-only.
    directory.chmod(_DIRECTORY_MODE)


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (an flock on the directory itself)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise CertificateError(f"cannot open {directory}: {error.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_files(files: Sequence[tuple[Path, bytes]], *, force: bool) -> None:
    """Write ``files`` so that a failure leaves no half-made set behind.

    Without ``force``, each file is created exclusively, so one that appeared since
    ``refuse_existing`` is not overwritten either, and what this call had created is
    removed again. With ``force``, every file is first written in full beside its
    destination and only then are all renamed into place, so running out of space or
    permissions replaces nothing.
    """
    try:
        if force:
            _replace_all(files)
        else:
            _create_all(files)
    except FileExistsError as error:
        raise CertificateFileExists([Path(error.filename)]) from None
    except OSError as error:
        # A failed rename reports the temporary file first; name the destination.
        path = error.filename2 or error.filename
        raise CertificateError(f"cannot write {path}: {error.strerror}") from None


def _create_all(files: Sequence[tuple[Path, bytes]]) -> None:
    created: list[Path] = []
    try:
        for path, data in files:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            fd = os.open(path, flags, _mode(path))
            created.append(path)
            _fill(fd, path, data)
    except BaseException:
        for path in created:
            path.unlink(missing_ok=True)
        raise


def _replace_all(files: Sequence[tuple[Path, bytes]]) -> None:
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in files:
            # mkstemp creates the file exclusively with mode 0600.
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            staged.append((Path(name), path))
            _fill(fd, path, data)
        for temporary, path in staged:
            os.replace(temporary, path)
    finally:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)


def _fill(fd: int, path: Path, data: bytes) -> None:
    """Write ``data`` to the new file ``fd`` and make it durable, closing ``fd``."""
    with open(fd, "wb") as file:
        # The mode given at creation is reduced by the umask; set it exactly.
        os.fchmod(fd, _mode(path))
        file.write(data)
        file.flush()
        os.fsync(fd)


def _mode(path: Path) -> int:
    return _KEY_MODE if path.suffix == ".key" else _PUBLIC_MODE
