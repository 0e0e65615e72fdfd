"""Storage: files and objects, with no knowledge of SQL."""
