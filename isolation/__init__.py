"""The isolation layer: run one command in its own cgroup v2 group and namespaces.

No gRPC and no users here; ``runner`` calls this. The public modules are:

- ``spec`` (``JobSpec``, ``ValidSpec``), ``limits`` (``Limits``, ``IOLimit``), ``namespaces``
  (``Namespaces``): what to run and how to confine it, validated up front;
- ``timelimits`` (``TimeLimits``), ``filesystem`` (``Filesystem``, ``Tmpfs``, ``Bind``),
  ``privileges`` (``Privileges``): its time limits, its view of the filesystem, and the
  capabilities and syscall filter it runs with;
- ``credentials`` (``Credentials``): the user and groups a job runs as;
- ``cgroups`` (``CgroupHost``): finding and preparing a usable cgroup v2 hierarchy;
- ``capacity`` (``HostCapacity``): how much the host has, and all jobs together may take;
- ``launcher`` (``Launcher``, ``RunningJob``): launching, stopping, adopting jobs;
- ``outcome`` (``Outcome``) and ``outputlog``: how a job ended and what it printed;
- ``rundir`` (``RunDir``): the files a job's shim keeps in its run directory;
- ``errors``: every error this layer raises.

This file deliberately imports nothing: the fork server imports this package,
and it must stay small to fork fast (see ``_forkserver``).
"""
