"""On disk: atomic checksummed artefacts, map record files, the IRN spool, and the run directory (its layout, lock and
file names)."""
