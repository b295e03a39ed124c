"""What a night is: AB files, the Night (the cascade), the configuration and the plan.

Pure Python: nothing here runs a process, talks to Snakemake or writes the state directory.
"""
