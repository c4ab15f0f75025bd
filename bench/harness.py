"""The benchmarks' harness in bench/.

- a real kernel: ``python manage.py runkernel`` in a subprocess on a temp state dir
  (:class:`KernelProcess`), with slots written beforehand through the kernel's own
  ``Ledger.save_slots`` (:func:`seed_slots`);
- reading status.json cheaply and waiting for a condition on it (:class:`StatusReader`);
- nearest-rank percentiles (the kernel's own definition, see ``kernel.kernel._percentile``);
- the machine a run happened on (:func:`machine_info`);
- output: a human table, then one JSON line (the summary) as the last line of stdout,
  and the whole result (summary + samples) in ``bench/results/<name>.json``.

Nothing here changes the kernel: the benchmarks drive it only through its state dir,
exactly as the console and kernelctl do.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kernel.control import atomic_write_text  # noqa: E402
from kernel.demo import DEMO_ASSETS, DEMO_STRATEGIES, DEMO_TIMEFRAMES  # noqa: E402
from kernel.ledger import Ledger  # noqa: E402
from kernel.protocol import SlotConfig  # noqa: E402

RESULTS_DIR = REPO / "bench" / "results"
PYTHON = sys.executable


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


def seed_slots(state_dir: Path, n: int) -> list[SlotConfig]:
    """Write ``n`` slots into a fresh state dir's ledger, as the kernel itself persists them."""
    configs = bench_slots(n)
    ledger = Ledger(Path(state_dir) / "ledger.sqlite3")
    try:
        ledger.add_slots([c.model_dump(mode="json") for c in configs])
    finally:
        ledger.close()
    return configs


def copy_strategies(dest: Path) -> Path:
    shutil.copytree(REPO / "strategies", dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def make_temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


# ---------------------------------------------------------------------- status.json


def iso_to_ms(value: str | None) -> int | None:
    if not value:
        return None
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


class StatusReader:
    """Reads status.json as plain JSON (no pydantic: with 1,000 slots a validated read costs
    tens of ms of the CPU the kernel is being measured on). ``poll`` parses only when the
    file's (inode, mtime, size) changed, or every ``force_s`` in case two writes share one."""

    def __init__(self, state_dir: Path, force_s: float = 0.05) -> None:
        self.path = Path(state_dir) / "status.json"
        self.force_s = force_s
        self.last: dict | None = None
        self._fp: tuple | None = None
        self._parsed_at = 0.0

    def read(self) -> dict | None:
        try:
            st = os.stat(self.path)
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return self.last  # never happens with atomic writes; keep the last good one
        self._fp = (st.st_ino, st.st_mtime_ns, st.st_size)
        self._parsed_at = time.monotonic()
        self.last = data
        return data

    def poll(self) -> dict | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        fp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if fp != self._fp or time.monotonic() - self._parsed_at >= self.force_s:
            return self.read()
        return self.last

    def wait(self, pred: Callable[[dict], bool], timeout_s: float, poll_s: float = 0.001,
             proc: "KernelProcess | None" = None) -> tuple[dict, int]:
        """Poll until ``pred(status)``; returns (status, monotonic ns when it was seen)."""
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.poll()
            if st is not None and pred(st):
                return st, time.monotonic_ns()
            if proc is not None:
                proc.check_alive()
            if time.monotonic() >= deadline:
                raise TimeoutError(f"status.json did not reach the expected state within {timeout_s:.0f} s "
                                   f"(last state {st.get('state') if st else None!r})")
            time.sleep(poll_s)

    def wait_command(self, command_id: str, timeout_s: float, poll_s: float = 0.002,
                     proc: "KernelProcess | None" = None) -> tuple[dict, dict, int]:
        """Wait for a command's result; returns (result entry, status, seen ns)."""
        found: dict = {}

        def has(st: dict) -> bool:
            for c in reversed(st.get("commands") or []):
                if c.get("id") == command_id:
                    found["c"] = c
                    return True
            return False

        st, seen = self.wait(has, timeout_s, poll_s, proc)
        return found["c"], st, seen


def effective_tick_ms(first: dict | None, last: dict | None) -> float | None:
    """The kernel's actual tick period between two status snapshots (wall ms per tick)."""
    if not first or not last or last.get("tick", 0) <= first.get("tick", 0):
        return None
    span = iso_to_ms(last["heartbeat_at"]) - iso_to_ms(first["heartbeat_at"])
    return round(span / (last["tick"] - first["tick"]), 3)


def done_ids(status: dict | None) -> set[str]:
    return {c["id"] for c in (status or {}).get("commands") or []}


# ---------------------------------------------------------------------- the kernel process


LAUNCHERS = ("runkernel", "direct")


class KernelProcess:
    """``manage.py runkernel`` on a state dir, its output in ``<state_dir>/kernel.log``.

    ``launcher="direct"`` runs the same ``runkernel`` command's ``handle`` through
    bench/kernel_main.py, without ``django.setup()`` (no console app is imported)."""

    def __init__(self, state_dir: Path, *, speed: float, tick_ms: int, demo: bool = False,
                 strategies_dir: Path | None = None, cash: float | None = None,
                 workers: int | None = None, extra: Sequence[str] = (),
                 launcher: str = "runkernel") -> None:
        self.state_dir = Path(state_dir)
        if launcher == "runkernel":
            head = [PYTHON, str(REPO / "manage.py"), "runkernel"]
        elif launcher == "direct":  # the same Command.handle, without django.setup()
            head = [PYTHON, str(REPO / "bench" / "kernel_main.py")]
        else:
            raise ValueError(f"unknown launcher {launcher!r}")
        self.launcher = launcher
        self.args = head + ["--state-dir", str(self.state_dir), "--speed", str(speed),
                            "--tick-ms", str(tick_ms)]
        if demo:
            self.args.append("--demo")
        if strategies_dir is not None:
            self.args += ["--strategies-dir", str(strategies_dir)]
        if cash is not None:
            self.args += ["--cash", str(cash)]
        if workers is not None:
            self.args += ["--workers", str(workers)]
        self.args += list(extra)
        self.log_path = self.state_dir / "kernel.log"
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None

    def start(self, timeout_s: float = 120.0) -> dict:
        """Start and wait until status.json (of this pid) says running."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.setdefault("DJANGO_SETTINGS_MODULE", "foresight_site.settings")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, cwd=REPO, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        reader = StatusReader(self.state_dir)
        try:
            st, _ = reader.wait(lambda s: s.get("pid") == self.proc.pid and s.get("state") == "running",
                                timeout_s, poll_s=0.02, proc=self)
        except BaseException as exc:
            self.stop(timeout_s=10)
            if isinstance(exc, TimeoutError):
                raise TimeoutError(f"kernel pid {self.proc.pid} did not report running within {timeout_s:.0f} s; "
                                   f"the end of {self.log_path}:\n{self.log_tail()}") from None
            raise
        return st

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the kernel exited with {self.proc.returncode}; the end of {self.log_path}:\n"
                               + self.log_tail())

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM (graceful stop: in-flight cycles finish, ledger flushed), SIGKILL if ignored."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log(f"kernel pid {self.proc.pid} ignored SIGTERM for {timeout_s:.0f} s: killing it")
                self.proc.kill()
                self.proc.wait(10)
        self.returncode = self.proc.returncode
        self._log.close()
        return self.returncode

    def __enter__(self) -> "KernelProcess":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ---------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest rank, as the kernel computes its own (``kernel.kernel._percentile``)."""
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))
    return s[k]


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
