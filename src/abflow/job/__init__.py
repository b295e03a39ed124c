"""What one job of a night runs: ``python -m abflow.job STEP TARGET ...``.

Kept light on purpose: a job imports only what it needs, so that it costs a few tens of
milliseconds of CPU around its recipe's own command.
"""
