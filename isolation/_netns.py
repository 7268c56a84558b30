"""Network namespaces prepared ahead of the job: only loopback, and it is up.

A namespace is created by one dedicated thread of the service: network
namespaces are per thread, so the thread can unshare, bring ``lo`` up with
pyroute2 from inside, and return to the host's namespace without affecting any
other thread. The job's first process then joins the finished namespace with
setns, so the job never runs with a half-configured network, and neither the
fork server nor the shims need pyroute2 (importing it triples their size and
fork time).
"""

from __future__ import annotations

import asyncio
import importlib
import os
from concurrent.futures import ThreadPoolExecutor

from jobworker.isolation import _syscalls as syscalls
from jobworker.isolation.errors import LaunchError
from jobworker.isolation.namespaces import CLONE_NEWNET


class NetnsFactory:
    """Makes ready-to-join network namespaces; each is returned as an open descriptor."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobworker-netns")
        self._host = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        # pyroute2 takes a while to import; do it now, not during the first launch.
        self._thread.submit(importlib.import_module, "pyroute2")

    async def create(self) -> int:
        """A new network namespace with loopback up, as a descriptor the caller must close."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._create)

    def _create(self) -> int:
        from pyroute2 import IPRoute  # noqa: PLC0415 - only this thread needs it; see module doc

        try:
            syscalls.unshare(CLONE_NEWNET)
        except OSError as error:
            raise LaunchError(
                f"cannot create a network namespace: {error.strerror}",
                stage="netns",
                errno=error.errno,
            ) from None
        namespace = -1
        try:
            namespace = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            with IPRoute() as ipr:
                ipr.link("set", ifname="lo", state="up")
        except OSError as error:
            if namespace >= 0:
                os.close(namespace)
            raise LaunchError(
                f"cannot bring up loopback in the job's network namespace: {error.strerror}",
                stage="netns",
                errno=error.errno,
            ) from None
        finally:
            syscalls.setns(self._host, CLONE_NEWNET)
        return namespace

    def close(self) -> None:
        """Stop the thread and release the host namespace handle."""
        self._thread.shutdown()
        os.close(self._host)
