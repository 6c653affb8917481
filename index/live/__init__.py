"""Live updates over an immutable index: update log, in-memory segment, tombstones, compaction."""
