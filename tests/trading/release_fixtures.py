"""What the release tests share (issue 11): a kernel's state dir holding a release store
written as the kernel writes it (``versions/<sha256>/`` with the source files and a
manifest.json), and its status.json saying which version runs, the working tree, a canary or
a shadow. Real files, read by the console's real readers."""
from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from kernel.release_store import MANIFEST, VERSIONS_DIR
from kernel.versions.version import version_sha
from tests.trading.admin_fixtures import iso, slot_status, write_kernel_status
from trading import services
from trading.models import Kernel

V1 = {"ema_cross.py": "def evaluate(ctx):\n    return None\n", "indicators.py": "FAST = 12\n"}
V2 = {"ema_cross.py": "def evaluate(ctx):\n    return 'buy'\n", "indicators.py": "FAST = 12\n"}


def store_version(state_dir: Path, strategy: str, number: int, sources: dict[str, str], *,
                  by: str = "alice@host", commit: str = "uncommitted") -> str:
    """A store entry as kernel/release_store.py writes it; its sha256."""
    files = {name: hashlib.sha256(text.encode()).hexdigest() for name, text in sources.items()}
    sha = version_sha(files)
    entry = Path(state_dir) / VERSIONS_DIR / sha
    entry.mkdir(parents=True)
    for name, text in sources.items():
        (entry / name).write_text(text)
    manifest = {"strategy": strategy, "sha256": sha, "files": files, "number": number,
                "first_loaded_at": f"2026-12-0{number}T10:00:00.000Z", "by": by, "command_id": f"c-{number}",
                "commit": commit}
    (entry / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return sha


def strategy_entry(version: int, sha: str, *, previous: tuple[int, str] | None = None, differs: bool = False,
                   canary: dict | None = None, shadow: dict | None = None) -> dict:
    now = timezone.now()
    entry = {"version": version, "sha256": sha, "loaded_at": iso(now - timedelta(hours=1)),
             "previous": {"version": previous[0], "sha256": previous[1]} if previous else None,
             "working_tree": {"sha256": "f" * 64 if differs else sha, "differs": differs}}
    if canary is not None:
        entry["canary"] = canary
    if shadow is not None:
        entry["shadow"] = shadow
    return entry


def canary_entry(version: int, sha: str, slots: list[str], state: str = "running") -> dict:
    return {"version": version, "sha256": sha, "slots": slots, "since": iso(timezone.now()),
            "budget": {"cycles": 20, "faults": 1}, "state": state, "counts": {"cycles": 3, "faults": 0},
            "reason": "raised in evaluate: boom" if state == "auto_rolled_back" else None}


def shadow_entry(version: int, sha: str, slots: list[str]) -> dict:
    per_slot = {s: {"evaluations": 5, "differences": 2, "skipped": 0, "faults": 0, "done": False,
                    "last_differences": [{"candle": "2026-12-07T10:05:00.000Z", "live": "hold", "shadow": "enter"}]}
                for s in slots}
    return {"version": version, "sha256": sha, "slots": slots, "since": iso(timezone.now()), "cycles": 50,
            "done": False, "counts": {"evaluations": 5 * len(slots), "differences": 2 * len(slots), "skipped": 0,
                                      "faults": 0}, "per_slot": per_slot}


def write_release_status(state_dir: Path, *, running: int = 2, tick: int = 10, **entry) -> None:
    """status.json: ema_cross runs v``running`` (of V1, V2) on btc-5m and eth-5m."""
    shas = {1: version_sha({n: hashlib.sha256(t.encode()).hexdigest() for n, t in V1.items()}),
            2: version_sha({n: hashlib.sha256(t.encode()).hexdigest() for n, t in V2.items()})}
    sha = shas[running]
    slots = [slot_status("btc-5m", "BTC/USDT"), slot_status("eth-5m", "ETH/USDT")]
    for s in slots:
        s.strategy_version, s.strategy_sha256 = running, sha
    previous = (1, shas[1]) if running == 2 else None
    write_kernel_status(state_dir, tick=tick, slots=slots,
                        strategies={"ema_cross": strategy_entry(running, sha, previous=previous, **entry)})


@pytest.fixture
def store(state_dir: Path) -> dict[int, str]:
    """v1 and v2 of ema_cross in the kernel's store: number → sha256."""
    return {1: store_version(state_dir, "ema_cross", 1, V1), 2: store_version(state_dir, "ema_cross", 2, V2)}


@pytest.fixture
def release_kernel(state_dir: Path, store: dict[int, str]) -> Kernel:
    """k1: v2 of ema_cross runs on btc-5m and eth-5m, v1 before it, both stored."""
    write_release_status(state_dir)
    return services.kernel_register(name="k1", state_dir=str(state_dir))


def resync(kernel: Kernel, state_dir: Path, *, tick: int, **kw) -> None:
    """The kernel reports something new (a later tick), and the console reads it."""
    write_release_status(state_dir, tick=tick, **kw)
    services.status_sync(kernel=kernel)
    kernel.refresh_from_db()
