"""ytvideo: the YTEMPIRE GPU video service (API, worker, render pipeline)."""

__version__ = "1.0.0"
