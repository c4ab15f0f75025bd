"""``manage.py kernelctl …`` in its own process, as an operator runs it (the console's
settings; its reads of a state dir touch no database)."""
from __future__ import annotations

import subprocess
import sys

from tests.support.checkout import REPO
from tests.support.kernel_process import kernel_env


def kernelctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "kernelctl", *args], cwd=REPO, env=kernel_env(settings="foresight_site.settings"),
        capture_output=True, text=True, timeout=60,
    )
