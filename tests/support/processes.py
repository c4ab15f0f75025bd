"""Child processes of the checkout: their environment, a start in their own session with the
output in a log file, and an end that leaves nothing behind (the whole process group)."""
from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.checkout import PYTHON, REPO


def clean_env(*, drop: Sequence[str] = (), **extra: str) -> dict[str, str]:
    """This process's environment without the FORESIGHT_* knobs (a developer's shell must not
    steer a test's processes) nor the names in ``drop``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORESIGHT_") and k not in drop}
    env.update(extra)
    return env


def spawn(args: Sequence[str], *, env: Mapping[str, str], log_path: Path, cwd: Path = REPO,
          pipes: bool = False) -> subprocess.Popen:
    """``args`` in the background, in a session of its own (so that :func:`kill_group` reaches its
    children too). Its output is appended to ``log_path``; with ``pipes`` its stdin and stdout
    are text pipes instead and only stderr goes to the log."""
    log = open(log_path, "ab")
    try:
        if pipes:
            return subprocess.Popen(list(args), cwd=cwd, env=dict(env), stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
        return subprocess.Popen(list(args), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()  # the child holds its own descriptor


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL, timeout: float = 30.0) -> int:
    """``sig`` to the process's group, then wait for it (SIGKILL if ``sig`` was not enough)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(timeout)


def log_tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def run_python(code: str, *, env: Mapping[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Another interpreter of the checkout running ``code``: a writer the kernel does not know."""
    return subprocess.run([PYTHON, "-c", code], cwd=REPO, env=dict(env), capture_output=True, text=True,
                          timeout=timeout)

