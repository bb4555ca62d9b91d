"""Shared package of the doubleword-batches scripts, one sub-package per concern.

``core`` (configuration, HTTP, output, errors, files, platform), ``api`` (what a request may hold),
``jobs`` (the job directory and its record), ``validation``, ``cost``, ``build``, ``submit``,
``results`` and ``workflow`` (one function per command); each imports only from those before it
(ARCHITECTURE.md). The scripts in ``scripts/`` are thin command-line layers over ``workflow``.
"""

import os

__version__ = "0.1.0"
USER_AGENT = f"doubleword-batches/{__version__}"
# Where the scripts live (the skill's own files are found from here, wherever it is installed).
SCRIPTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKILL_DIR = os.path.dirname(SCRIPTS_DIR)
