"""The bundled example night's tooling: synthetic raw frames, abflow's esorex-based processAB
and processQC stand-ins, and the generator of synthetic nights for tests and benchmarks.

Nothing in the rest of abflow imports this package; its commands reach the ``abflow`` command
line through the ``abflow.commands`` entry point (see abflow.example.cli).
"""
