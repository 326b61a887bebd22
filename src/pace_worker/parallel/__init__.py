"""Where chunks of per-structure work run: local processes or a Dask cluster."""
