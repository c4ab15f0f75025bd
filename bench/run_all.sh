#!/usr/bin/env bash
# Run the benchmarks (docs/benchmarks.md), one after the other (never two at once: they would
# measure each other), then draw the plots (docs/img/*.png):
#   reload lock wait, halt latency, deploy blind window (hot reload vs restart), scale,
#   console under load (gunicorn + wrk), profiles of the hot paths.
# Tables and one JSON summary line per benchmark on stdout, progress on stderr,
# full results in bench/results/<name>.json (gitignored).
#
#   bench/run_all.sh             # full size: about 30-35 minutes on 2 cores
#   bench/run_all.sh --quick     # about 5 minutes
#   make bench [BENCH_ARGS=--quick]
#
# Needs the bench extra (pip install -e '.[bench]': matplotlib, gunicorn, pyinstrument) and,
# for the console load, Debian's wrk (BENCH=1 scripts/system-deps.sh); without wrk the
# console benchmark falls back to its Python load generator.
# Other arguments (--launcher direct, --keep) go to the kernel benchmarks; the console and
# profile benchmarks get only --quick (and --keep).
set -euo pipefail
# Modules run from the checkout's root: kernel, bench and tests.support import from here.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-.venv/bin/python}

# make bench installs only the project: add the bench extra when it is missing.
if ! "$PY" -c 'import matplotlib, pyinstrument, gunicorn' 2>/dev/null; then
  echo "Installing the bench extra (matplotlib, gunicorn, pyinstrument) into $(dirname "$(dirname "$PY")")" >&2
  PYTHONWARNINGS='ignore:Editable installation' "$PY" -m pip install -q -e '.[bench]'
fi
command -v wrk >/dev/null 2>&1 || echo "note: wrk not installed (BENCH=1 scripts/system-deps.sh): the console load uses its Python client" >&2

simple=()
for a in "$@"; do
  case "$a" in --quick|--keep) simple+=("$a") ;; esac
done
quick=()
for a in "$@"; do [ "$a" = --quick ] && quick=(--quick); done

"$PY" -m bench.reload_lock "$@"
"$PY" -m bench.halt_latency "$@"
"$PY" -m bench.deploy_blind_window "$@"
"$PY" -m bench.scale "$@"
"$PY" -m bench.console_load "${simple[@]}"
"$PY" -m bench.profile_hotpaths "${quick[@]}"
"$PY" -m bench.statelessness_check "${quick[@]}"
"$PY" -m bench.version_store "${quick[@]}"
"$PY" -m bench.shadow_cost "${quick[@]}"
"$PY" -m bench.ccxt_feed_fetch "${quick[@]}"
"$PY" -m bench.restart_recovery "${simple[@]}"
"$PY" -m bench.memory "${simple[@]}"
# Foresight's half only; BENCH_PEER=freqtrade installs freqtrade into bench/.peer-venv/ (~770 MB) and runs it too.
"$PY" -m bench.peer_freqtrade "${quick[@]}" --peer "${BENCH_PEER:-none}"
"$PY" -m bench.plot "${quick[@]}"
