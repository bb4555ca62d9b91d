"""Shared core of the doubleword-batches scripts.

Config, HTTP client, validation, job state and output live here; the scripts in
``scripts/`` are thin command-line layers over this package.
"""

__version__ = "0.1.0"
USER_AGENT = f"doubleword-batches/{__version__}"
