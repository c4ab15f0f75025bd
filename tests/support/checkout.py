"""The checkout the tests and benchmarks run: its root (where manage.py lives) and the
interpreter of this run, so that child processes use the same virtualenv."""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
