"""The runner: owns jobs from start to end and keeps their records and output.

No gRPC here; ``api`` wraps it. The public modules are ``runner`` (``Runner``,
``RunnerConfig``, ``StartRequest``), ``records`` (``JobRecord``, ``JobState``),
``output`` (what a stream of a job's output yields), ``pages`` (``JobPage``, a page of
a job listing) and ``errors``.
"""
