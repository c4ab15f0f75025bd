"""What the benchmarks in bench/ share beyond tests/support (which starts and reads kernels).

- the slots of a benchmark run (:func:`bench_slots`, :func:`seed_bench_slots`) and a kernel
  set up the benchmarks' way (:func:`bench_kernel`, :func:`start_running`);
- nearest-rank percentiles (the kernel's own definition, see ``kernel.cycle_stats.percentile``);
- the machine a run happened on (:func:`machine_info`);
- output: a human table, then one JSON line (the summary) as the last line of stdout,
  and the whole result (summary + samples) in ``bench/results/<name>.json``.

Nothing here changes the kernel: the benchmarks drive it only through its state dir,
exactly as the console and kernelctl do. They run as modules from the checkout's root
(``python -m bench.<name>``), so ``kernel`` and ``tests.support`` import with no path edits.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

from kernel.control import atomic_write_text
from kernel.cycle_stats import percentile  # nearest rank, as the kernel computes its own
from kernel.demo import DEMO_ASSETS, DEMO_STRATEGIES, DEMO_TIMEFRAMES
from kernel.protocol import SlotConfig
from tests.support.checkout import REPO
from tests.support.kernel_process import KernelProcess, runkernel_args
from tests.support.slot_seeds import seed_slots
from tests.support.status_reader import iso_to_ms

RESULTS_DIR = REPO / "bench" / "results"
# runkernel: manage.py runkernel; direct: ``python -m kernel``, the same command without django.setup()
LAUNCHERS = ("runkernel", "direct")
START_S = 120.0


def log(msg: str) -> None:
    """Progress goes to stderr, so that stdout holds only the table and the JSON line."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- slots


def bench_slots(n: int) -> list[SlotConfig]:
    """``n`` slots over the 8 demo assets, alternating 5m and 15m, strategies round-robin.

    For ``n == 16`` this is exactly the reference deployment (``kernel.demo.demo_slots``);
    beyond 16 the ids get a number (``btc-5m-0016``)."""
    slots = []
    for i in range(n):
        asset = DEMO_ASSETS[(i // len(DEMO_TIMEFRAMES)) % len(DEMO_ASSETS)]
        tf = DEMO_TIMEFRAMES[i % len(DEMO_TIMEFRAMES)]
        slot_id = f"{asset.lower()}-{tf}" if n <= 16 else f"{asset.lower()}-{tf}-{i:04d}"
        slots.append(SlotConfig(
            id=slot_id, symbol=f"{asset}/USDT", timeframe=tf,
            strategy=DEMO_STRATEGIES[i % len(DEMO_STRATEGIES)],
            order_notional=500.0, max_notional=2_000.0,
        ))
    return slots


def seed_bench_slots(state_dir: Path, n: int) -> list[SlotConfig]:
    """Write :func:`bench_slots` into a fresh state dir's ledger, as the kernel itself persists them."""
    return seed_slots(state_dir, bench_slots(n))


def make_temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


# ---------------------------------------------------------------------- the kernel process


def bench_kernel(state_dir: Path, *, speed: float, tick_ms: int, launcher: str = "runkernel",
                 demo: bool = False, strategies_dir: Path | None = None, cash: float | None = None,
                 workers: int | None = None, extra: Sequence[str] = ()) -> KernelProcess:
    """A kernel on ``state_dir`` (not started yet), its output in ``<state_dir>/kernel.log``. It gets
    this process's environment as it is (a benchmark run may set FORESIGHT_* knobs on purpose),
    with the console's settings unless DJANGO_SETTINGS_MODULE names others."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("DJANGO_SETTINGS_MODULE", "foresight_site.settings")
    args = runkernel_args(speed=speed, tick_ms=tick_ms, demo=demo, strategies_dir=strategies_dir, cash=cash,
                          workers=workers, extra=extra)
    return KernelProcess(state_dir, args, launcher=launcher, env=env)


def is_running(status: dict) -> bool:
    return status.get("state") == "running"


def start_running(kernel: KernelProcess, timeout: float = START_S) -> dict:
    """Start the kernel, wait until its status.json says running, and return that status."""
    kernel.start(timeout=timeout, ready=is_running)
    assert kernel.first_status is not None
    return kernel.first_status


def effective_tick_ms(first: dict | None, last: dict | None) -> float | None:
    """The kernel's actual tick period between two status snapshots (wall ms per tick)."""
    if not first or not last or last.get("tick", 0) <= first.get("tick", 0):
        return None
    span = iso_to_ms(last["heartbeat_at"]) - iso_to_ms(first["heartbeat_at"])
    return round(span / (last["tick"] - first["tick"]), 3)


# ---------------------------------------------------------------------- statistics


def stats(values: Iterable[float | None], ndigits: int = 3) -> dict[str, Any]:
    """n, p50, p99, max (and min, mean) of the non-None values."""
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return {"n": 0, "p50": None, "p99": None, "max": None, "min": None, "mean": None}

    def r(x: float) -> float:
        return round(float(x), ndigits)

    return {"n": len(vals), "p50": r(percentile(vals, 0.5)), "p99": r(percentile(vals, 0.99)),
            "max": r(vals[-1]), "min": r(vals[0]), "mean": r(sum(vals) / len(vals))}


def histogram(values: Iterable[float], edges: Sequence[float]) -> dict[str, int]:
    """Counts per bucket: ``<e0``, ``e0-e1``, ..., ``>=eN``."""
    vals = list(values)
    out: dict[str, int] = {}
    lo = None
    for e in edges:
        key = f"<{e:g}" if lo is None else f"{lo:g}-{e:g}"
        out[key] = sum(1 for v in vals if (lo is None or v >= lo) and v < e)
        lo = e
    out[f">={lo:g}"] = sum(1 for v in vals if v >= lo)
    return out


# ---------------------------------------------------------------------- the machine


def machine_info() -> dict[str, Any]:
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_mb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_mb = int(line.split()[1]) // 1024
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    # The tree changes under active development: identify the kernel code actually measured.
    h = hashlib.sha256()
    for f in sorted((REPO / "kernel").rglob("*.py")):
        h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes())
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "kernel_sources_sha256": h.hexdigest()[:16],
        "nproc": affinity or os.cpu_count(),
        "cpu": cpu,
        "ram_mb": ram_mb,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# ---------------------------------------------------------------------- output


def fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        s = f"{v:.{nd}f}"
        if "." in s:
            s = s.rstrip("0").rstrip(".")
        if s in ("0", "-0") and v != 0:
            s = f"{v:.2g}"
        return s
    return str(v)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for j, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def emit(name: str, result: dict[str, Any], tables: Sequence[str]) -> Path:
    """Print the human tables, then the summary as one JSON line (the last line of stdout);
    write the whole result to bench/results/<name>.json."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    result.setdefault("machine", {})["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    for t in tables:
        print(t)
        print()
    line = {"bench": name, "results_file": str(path.relative_to(REPO)), **result["summary"]}
    print(json.dumps(line, separators=(",", ":")))
    sys.stdout.flush()
    return path
