"""The cost of storing a version in the release store (kernel/release_store.py), which every
reload that swaps pays before the swap (and a first load at startup).

For each strategy shipped in strategies/: load it as the kernel does (a fresh generation),
then ``--rounds`` times, each in a new temp state dir (its own ledger): ``ReleaseStore.put``
of a new entry (the source files and manifest written, each fsynced, the folder fsynced,
renamed, ``versions/`` fsynced; the number kept in the ledger's meta, a durable SQLite
commit; the git commit of the strategies folder asked of ``git``), then ``put`` of the same
version again (the entry is there: verified, every file hashed, nothing written). The git
question is also timed alone. Reported: ms per store, median and best, per strategy. In this
process, no kernel.

    .venv/bin/python -m bench.version_store            # 25 rounds
    .venv/bin/python -m bench.version_store --quick    # 5 rounds

Conditions printed with the table: git commit, load average at start and end, Python version
(bench/harness.py ``machine_info``); the temp dir's file system decides what an fsync costs.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import time

from bench.harness import emit, format_table, log, machine_info, make_temp_dir
from kernel.ledger import LEDGER_FILE, Ledger
from kernel.release_store import ReleaseStore, git_commit
from kernel.versions.loader import StrategyLoader
from tests.support.checkout import REPO

NAME = "version_store"


def _ms(t0: int) -> float:
    return (time.perf_counter_ns() - t0) / 1e6


def measure(name: str, rounds: int) -> dict:
    folder = REPO / "strategies"
    version = StrategyLoader(folder).load(name, 1)
    new, again, git = [], [], []
    try:
        for i in range(rounds):
            state = make_temp_dir(f"bench-version-store-{name}-{i}-")
            ledger = Ledger(state / LEDGER_FILE)
            try:
                store = ReleaseStore(state, ledger=ledger, strategies_dir=folder)
                t0 = time.perf_counter_ns()
                store.put(version, by="bench", command_id=None)
                new.append(_ms(t0))
                t0 = time.perf_counter_ns()
                store.put(version, by="bench", command_id=None)
                again.append(_ms(t0))
                t0 = time.perf_counter_ns()
                git_commit(folder)
                git.append(_ms(t0))
            finally:
                ledger.close()
                shutil.rmtree(state, ignore_errors=True)
    finally:
        version.unload()
    return {
        "strategy": name, "files": len(version.files),
        "bytes": sum(len(b) for b in version.sources.values()),
        "new_ms_p50": statistics.median(new), "new_ms_min": min(new),
        "again_ms_p50": statistics.median(again), "git_ms_p50": statistics.median(git),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=25)
    ap.add_argument("--quick", action="store_true", help="5 rounds")
    a = ap.parse_args()
    rounds = 5 if a.quick else a.rounds
    machine = machine_info()
    rows = []
    for name in StrategyLoader(REPO / "strategies").available():
        log(f"{name}: {rounds} rounds")
        rows.append(measure(name, rounds))
    table = format_table(
        ["strategy", "files", "bytes", "new entry ms p50", "best ms", "again (verify) ms p50", "of which git ms p50"],
        [[r["strategy"], r["files"], r["bytes"], r["new_ms_p50"], r["new_ms_min"], r["again_ms_p50"], r["git_ms_p50"]]
         for r in rows])
    conditions = (f"commit {machine['git_commit']} (kernel sources {machine['kernel_sources_sha256']}), "
                  f"Python {machine['python']}, {machine['nproc']} cores, load average {machine['loadavg_at_start']}")
    summary = {"rounds": rounds, **{f"{r['strategy']}_new_ms_p50": round(r["new_ms_p50"], 3) for r in rows}}
    emit(NAME + ("_quick" if a.quick else ""), {"summary": summary, "machine": machine, "rows": rows},
         [conditions, table])


if __name__ == "__main__":
    main()
