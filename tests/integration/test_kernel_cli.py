"""``python -m kernel`` as an operator runs it: a real process, its exit codes and its output."""
from __future__ import annotations

import subprocess

import pytest

from tests.support.checkout import PYTHON, REPO
from tests.support.kernel_process import KernelProcess, kernel_env, runkernel_args

pytestmark = pytest.mark.integration


def test_python_m_kernel_refuses_bad_input_with_one_line_and_exit_1(tmp_path):
    for argv, said in (([], "--state-dir is required"),
                       (["--state-dir", str(tmp_path), "--tick-ms", "0"], "--tick-ms must be > 0"),
                       (["--state-dir", str(tmp_path), "--feed", "nope"], "invalid choice")):
        done = subprocess.run([PYTHON, "-m", "kernel", *argv], cwd=REPO, env=kernel_env(),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, (argv, done.stderr)
        assert said in done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "status.json").exists()  # refused before anything was built


def test_python_m_kernel_runs_the_demo_and_stops_cleanly_on_sigterm(tmp_path):
    kernel = KernelProcess(tmp_path / "state", runkernel_args(demo=True, speed=60), launcher="direct")
    try:
        kernel.start()
        status = kernel.wait(lambda s: s["state"] == "running" and len(s["slots"]) == 16,
                             what="the demo's 16 slots running")
        assert status["pid"] == kernel.pid
        assert kernel.terminate() == 0
        assert kernel.status()["state"] == "stopped"
    finally:
        kernel.cleanup()
