"""PNG plots of the benchmark distributions, from bench/results/*.json, into docs/img/.

    .venv/bin/python -m bench.plot            # the full runs' results (name.json) -> docs/img/
    .venv/bin/python -m bench.plot --quick    # the --quick results -> bench/results/img/ (not committed)

A plot whose results file is missing is skipped (and said so on stderr). Needs matplotlib
(``pip install -e '.[bench]'``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
IMG = REPO / "docs" / "img"


def load(name: str, quick: bool) -> dict | None:
    path = RESULTS / (f"{name}_quick.json" if quick else f"{name}.json")
    if not path.is_file():
        print(f"plot: no {path.relative_to(REPO)}, skipped", file=sys.stderr)
        return None
    return json.loads(path.read_text())


def machine_note(d: dict) -> str:
    m = d.get("machine") or {}
    la = m.get("loadavg_at_start") or ["?"]
    return (f"{m.get('nproc')} CPUs ({m.get('cpu')}), Python {m.get('python')}, {m.get('date')}, "
            f"shared machine (1-min load {la[0]} at start)")


def cdf(ax, values, label, **kw):
    xs = sorted(values)
    if not xs:
        return
    ys = [(i + 1) / len(xs) for i in range(len(xs))]
    ax.step(xs, ys, where="post", label=f"{label} (n={len(xs)})", **kw)


def plot_deploy(d: dict, out: Path) -> None:
    runs = d["summary"]["runs"]
    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4.5), squeeze=False)
    for ax, r in zip(axes[0], runs):
        key = str(r["slots"])
        evs = d["events"][key]
        base = d["baseline_gaps_ms"][key]
        hot = [e["longest_gap_ms"] for e in evs if e["kind"] == "hot_reload" and e.get("longest_gap_ms")]
        rst = [e["longest_gap_ms"] for e in evs if e["kind"] == "restart" and e.get("longest_gap_ms")]
        t2r = [e["term_to_running_ms"] for e in evs if e["kind"] == "restart" and e.get("term_to_running_ms")]
        data = [base, hot, rst, t2r]
        labels = ["normal gap\n(no deploy)", "hot reload:\nlongest gap", "restart:\nlongest gap",
                  "restart:\nSIGTERM→running"]
        ax.boxplot(data, showfliers=True, whis=(0, 100))
        for i, vals in enumerate(data, start=1):
            ax.scatter([i + 0.18] * len(vals), vals, s=10, alpha=0.6)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
        ax.set_ylabel("wall-clock ms")
        ax.set_title(f"{r['slots']} slots, speed {r['speed']:g}× (closes every "
                     f"{r['close_interval_wall_ms']['5m']:g} ms)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Deploy blind window: hot reload vs restart (SIGTERM + start)\n" + machine_note(d), fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_scale(d: dict, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for s in d["searches"]:
        pts = sorted((r["slots"], r["lag_wall_ms"]["p99"], r["pass"]) for r in s["runs"] if r["lag_wall_ms"]["p99"])
        if not pts:
            continue
        line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{s['strategy']} "
                        f"(max {s['max_passing_slots']})")
        fails = [p for p in pts if not p[2]]
        ax.scatter([p[0] for p in fails], [p[1] for p in fails], marker="x", s=80, color=line.get_color())
    ax.axhline(1000, color="red", ls="--", lw=1, label="1 s limit")
    ax.axvline(2000, color="grey", ls=":", lw=1, label="2,000-slot target")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("slots in one kernel")
    ax.set_ylabel("p99 candle close → cycle start, wall ms")
    ax.set_title("Scale: p99 start lag by slot count (x = run failed)\n" + machine_note(d), fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_console(d: dict, out: Path) -> None:
    runs = d["summary"]["runs"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2))
    labels = [f"{r['endpoint'].replace('admin_dashboard', 'dashboard').replace('status_api', 'status')}\nc={r['connections']}" for r in runs]
    x = range(len(runs))
    a1.bar(x, [r["rps"] or 0 for r in runs], color="tab:blue")
    a1.axhline(500, color="red", ls="--", lw=1, label="500 req/s target (status)")
    a1.set_xticks(list(x), labels, fontsize=8)
    a1.set_ylabel("requests/s")
    a1.legend(fontsize=8)
    for q, c in (("p50_ms", "tab:green"), ("p90_ms", "tab:orange"), ("p99_ms", "tab:red")):
        a2.plot(list(x), [r.get(q) for r in runs], marker="o", label=q.replace("_ms", ""), color=c)
    a2.axhline(50, color="red", ls="--", lw=1, label="50 ms target (status p99)")
    a2.set_yscale("log")
    a2.set_xticks(list(x), labels, fontsize=8)
    a2.set_ylabel("latency, ms")
    a2.legend(fontsize=8)
    fig.suptitle(f"Console under load (gunicorn {d['summary']['gunicorn_workers']} sync workers, "
                 f"{d['summary']['client']})\n" + machine_note(d), fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_halt(d: dict, out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for key, samples in d["halts"].items():
        tick = float(key)
        cdf(axes[0], [s["write_to_observed_ms"] / tick for s in samples if s["write_to_observed_ms"] is not None],
            f"tick {key} ms: observed")
        cdf(axes[0], [s["write_to_status_ms"] / tick for s in samples], f"tick {key} ms: status halted", ls="--")
        cdf(axes[1], [s["last_order_pass_minus_write_ms"] for s in samples
                      if s["last_order_pass_minus_write_ms"] is not None], f"tick {key} ms")
    axes[0].axvline(1, color="red", lw=1, ls=":")
    axes[0].set_xlabel("halt latency from the control.json write, in ticks")
    axes[0].set_ylabel("fraction of halts")
    axes[0].set_xscale("log")
    axes[0].legend(fontsize=7)
    axes[1].axvline(0, color="red", lw=1, ls=":")
    axes[1].set_xlabel("last order accepted by the gate − halt write, ms")
    axes[1].legend(fontsize=7)
    fig.suptitle("Halt latency (CDF)\n" + machine_note(d), fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_reload(d: dict, out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for key, samples in d["reloads"].items():
        cdf(axes[0], [s["swap_lock_wait_ms"] * 1000 for s in samples if s["swap_lock_wait_ms"] is not None],
            f"{key} slots")
        cdf(axes[1], [s["round_trip_ms"] for s in samples], f"{key} slots")
    axes[0].set_xscale("log")
    axes[0].axvline(1000, color="red", lw=1, ls=":", label="1 ms")
    axes[0].set_xlabel("swap's wait for the reload lock, µs")
    axes[0].set_ylabel("fraction of reloads")
    axes[0].legend(fontsize=8)
    axes[1].set_xlabel("reload command written → result in status.json, ms")
    axes[1].legend(fontsize=8)
    fig.suptitle("Reload lock (CDF; per-cycle waits are in docs/benchmarks.md)\n" + machine_note(d), fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="plot the *_quick.json results")
    a = p.parse_args(argv)
    # The full runs' plots are committed (docs/img); the --quick ones stay in bench/results/img.
    img = RESULTS / "img" if a.quick else IMG
    img.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if a.quick else ""
    made = []
    for name, fn in (("deploy_blind_window", plot_deploy), ("scale", plot_scale), ("console_load", plot_console),
                     ("halt_latency", plot_halt), ("reload_lock", plot_reload)):
        d = load(name, a.quick)
        if d is None:
            continue
        out = img / f"{name}{suffix}.png"
        try:
            fn(d, out)
        except (KeyError, TypeError, ValueError) as exc:
            print(f"plot: {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        made.append(str(out.relative_to(REPO)))
    print(json.dumps({"plots": made}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
