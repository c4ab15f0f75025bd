"""Issue 16, target 4: ``python -m kernel`` pays for no import it does not use. Neither
``--help`` nor a paper kernel's start and first cycles import Django or ccxt, and
prometheus-client only comes with ``--metrics-addr`` (kernel/metrics.py is a no-op without it).
Each case runs in a fresh interpreter, which reports its own ``sys.modules``."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support.checkout import PYTHON, REPO

WATCHED = ("django", "ccxt", "prometheus_client", "trading", "foresight_site")

HELP = r"""
import json, runpy, sys
sys.argv = ["kernel", "--help"]
try:
    runpy.run_module("kernel", run_name="__main__")
except SystemExit:
    pass
print("MODULES " + json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(WATCHED))))
"""

# The real entry point (kernel.cli.main, as kernel/__main__.py calls it) on a thread; this
# thread waits for the kernel's cycles in status.json, reports the modules, then stops it.
RUN = r"""
import json, sys, threading, time
from pathlib import Path
from kernel import cli

box = {}
def serve(*, kernel, say):
    box["kernel"] = kernel
    kernel.run()
cli.kernel_serve = serve
argv = sys.argv[1:]
state = Path(argv[argv.index("--state-dir") + 1])
t = threading.Thread(target=cli.main, args=(argv,), daemon=True)
t.start()
deadline = time.monotonic() + 120
cycles = 0
while time.monotonic() < deadline and cycles == 0:
    time.sleep(0.05)
    try:
        st = json.loads((state / "status.json").read_text())
    except (OSError, ValueError):
        continue
    cycles = sum(s.get("cycles", 0) for s in st.get("slots", []))
box["kernel"].stop()
t.join(60)
print("CYCLES", cycles)
print("MODULES " + json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(WATCHED))))
"""


def _modules(script: str, *args: str) -> tuple[set[str], str]:
    code = f"WATCHED = {WATCHED!r}\n" + script
    proc = subprocess.run([PYTHON, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("MODULES ")][-1]
    return set(json.loads(line.split(" ", 1)[1])), proc.stdout


def test_help_imports_neither_django_nor_ccxt_nor_prometheus():
    modules, _ = _modules(HELP)
    assert modules == set()


def test_a_paper_kernel_runs_its_cycles_without_django_ccxt_or_prometheus(tmp_path: Path):
    modules, out = _modules(RUN, "--state-dir", str(tmp_path / "state"), "--demo", "--speed", "600",
                            "--tick-ms", "20")
    assert "CYCLES 0" not in out  # it did run cycles (numpy strategies, paper orders)
    assert modules == set()


def test_metrics_addr_brings_prometheus_and_only_it(tmp_path: Path):
    modules, out = _modules(RUN, "--state-dir", str(tmp_path / "state"), "--demo", "--speed", "600",
                            "--tick-ms", "20", "--metrics-addr", "127.0.0.1:0")
    assert "CYCLES 0" not in out
    assert modules == {"prometheus_client"}


def test_the_watch_sees_an_import_when_there_is_one():
    code = "import django\n" + HELP
    modules, _ = _modules(code)
    assert modules == {"django"}
