"""What one job of a night runs (abflow.job.command: its command line; abflow.job.main: the
job; abflow.job.pool: how a pool starts it).

Kept light on purpose: a job imports only what it needs, so that it costs a few tens of
milliseconds of CPU around its recipe's own command (bench/fanout.py).
"""
