"""Fixtures the console's tests share: the audit spool in a temp file, and kernels the
console knows — one a real ``runkernel`` process on a temp state dir (the demo deployment
at 600× speed, started through tests/support's one launcher), one a bare state dir with no
process behind it."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.kernel_process import KernelProcess, runkernel_args
from trading import services
from trading.models import Kernel, Slot


@pytest.fixture
def spool(tmp_path, settings) -> Path:
    settings.FORESIGHT_AUDIT_SPOOL = str(tmp_path / "audit-spool.jsonl")
    return tmp_path / "audit-spool.jsonl"


@pytest.fixture
def runkernel(tmp_path):
    """Start ``manage.py runkernel --demo --speed 600`` on a fresh state dir (returned once it
    has ticked); killed at teardown."""
    kernels: list[KernelProcess] = []

    def start(name: str = "state") -> Path:
        kernel = KernelProcess(tmp_path / name, runkernel_args(demo=True, speed=600),
                               log_path=tmp_path / f"{name}.log")
        kernels.append(kernel)
        kernel.start()
        return kernel.state_dir

    yield start
    for kernel in kernels:
        kernel.cleanup()


@pytest.fixture
def live_kernel(runkernel, spool) -> Kernel:
    return services.kernel_register(name="demo", state_dir=str(runkernel()))


@pytest.fixture
def idle_kernel(tmp_path, spool) -> Kernel:
    """Known to the console, with no process behind it: commands land in control.json."""
    state_dir = tmp_path / "idle"
    state_dir.mkdir()
    kernel = Kernel.objects.create(name="idle", state_dir=str(state_dir), state="running")
    Slot.objects.create(kernel=kernel, slot_id="btc-5m", symbol="BTC/USDT", timeframe="5m", strategy="ema_cross",
                        params={"fast": 12, "slow": 26})
    return kernel
