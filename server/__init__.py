"""Network faces over one shared engine: the PostgreSQL wire protocol, pg_catalog emulation,
HTTP line-protocol ingest."""
