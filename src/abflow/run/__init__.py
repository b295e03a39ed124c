"""A run of a night under Snakemake: the rules' lookups, the start and end of a run, the
DRS_TYPE flavour from the profile, and the HTCondor side."""
