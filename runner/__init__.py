"""The runner: owns jobs from start to end and keeps their records and output.

No gRPC here; ``api`` wraps it, and reaches the isolation layer only through it. The
public modules are:

- ``runner`` (``Runner``, ``RunnerConfig``, ``StartRequest``): starting, stopping,
  inspecting and streaming jobs;
- ``records`` (``JobRecord``, ``JobState``, and the isolation layer's value types a
  record holds: ``Limits``, ``IOLimit``, ``Namespaces``, ``Usage``);
- ``output``: what a stream of a job's output yields;
- ``pages`` (``JobPage``): a page of a job listing;
- ``host`` (``JobPlacement``, ``check_host``): whether this host can run jobs, and where
  they go;
- ``defaults``: what the runner does when nobody says otherwise;
- ``errors``: every error this layer raises.
"""
