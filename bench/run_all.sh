#!/usr/bin/env bash
# Run the kernel benchmarks (docs/benchmarks.md): reload lock wait, then halt latency.
# Tables and one JSON summary line per benchmark on stdout, progress on stderr,
# full results in bench/results/<name>.json (gitignored).
#
#   bench/run_all.sh             # full size: about 11 minutes on 2 cores
#   bench/run_all.sh --quick     # about 1.5 minutes
#
# Any other argument is passed to both benchmarks (e.g. --launcher direct, --keep).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-.venv/bin/python}
"$PY" bench/reload_lock.py "$@"
"$PY" bench/halt_latency.py "$@"
