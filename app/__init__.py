"""timer-service: the service around timer_core (FastAPI, SQLite or PostgreSQL)."""

__all__ = ["__version__"]

# The one place the version is written: the API, /nodes and the package agree.
__version__ = "0.1.0"
