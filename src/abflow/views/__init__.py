"""What abflow shows and writes about a night: the state of every AB, the AB monitor page, the
timeline, and the DFOS job files of createjob."""
