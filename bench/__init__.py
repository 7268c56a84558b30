"""Benchmarks of jobworker against baselines measured in the same run (``scripts/bench``).

Each module measures one thing; ``python -m bench`` runs them all and writes the table and
the JSON file. Figures from a shared or emulated machine vary from run to run, so every
headline is a ratio against a baseline taken in the same run, on the same machine.
"""
