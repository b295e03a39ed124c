"""Where abflow keeps everything (the state directory's layout), how it writes files (atomic
writes) and the state of a running night (run locks, running markers, the STOP flag)."""
