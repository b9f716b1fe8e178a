"""The suite's PNG plots, drawn with matplotlib from a results file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import fmt
from benchmarks.figures import (
    PUSH_CONCURRENCY,
    TARGETS,
    check,
    fill_label,
    headroom,
    median,
    met,
    push_tput,
)

# The fixed ids drawn below: a rename in figures.py fails here, not as a silently empty plot.
check(["push_tput_1000", "base_push_tput", "pull_ryw_p50", "base_pull_p50", "fanin_ryw_p50",
       "base_fanin_p50"],
      ["push_lat", "visible_ack", "visible", "base_push", "pull_ev", "pull_ryw", "big_pull_ev",
       "big_pull_ryw", "base_pull", "fanin_ev", "fanin_ryw", "base_fanin", "rss_t", "rss_mib",
       "rss_applied"])

#: The plots ``plots()`` writes, in order, with their captions.
PLOTS: dict[str, str] = {
    "targets.png": "Every target, as headroom: bars right of 1 are met, left of 1 missed.",
    "latency.png": "Latency distributions of pushes, pulls and fan-in, xcombus (solid) against the "
                   "SQL baseline (dashed).",
    "baseline.png": "xcombus against the Airflow-style SQLAlchemy/SQLite baseline (medians; log "
                    "scale where the bars differ by more than 20x).",
    "materializer_rss.png": "Materializer RSS, with its view-writer child (sampled every 20 ms), "
                            "and progress through the backlog.",
    "push_throughput.png": "Push throughput against concurrency (median, min..max), with the "
                           "target and the baseline.",
}


def plots(res: dict[str, Any], img: Path) -> list[tuple[str, str]]:
    """Write the PNGs; return (file name, caption) pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    vals, samples, meta = res["values"], res["samples"], res["meta"]
    out: list[tuple[str, str]] = []
    plt.rcParams.update({"font.size": 10, "axes.grid": True, "grid.alpha": 0.3})

    # 1. Targets: measured against target, as a headroom factor (log scale).
    rows = [t for t in TARGETS if t[0] in vals]
    fig, ax = plt.subplots(figsize=(11, 0.6 * len(rows) + 1.8))
    names, mids, los, his, colors = [], [], [], [], []
    for fid, label, unit, op, target in rows:
        v = vals[fid]
        h = [headroom(op, x, target) for x in v]
        mids.append(headroom(op, median(v), target))
        los.append(min(h))
        his.append(max(h))
        names.append(f"{fill_label(label, meta)}\n{op} {fmt(target)} {unit}: "
                     f"measured {fmt(median(v))} {unit}")
        colors.append("#2e7d32" if met(op, median(v), target) else "#c62828")
    y = list(range(len(rows)))[::-1]
    ax.barh(y, mids, color=colors, alpha=0.85)
    ax.errorbar(mids, y, xerr=[[m - lo for m, lo in zip(mids, los, strict=True)],
                               [hi - m for m, hi in zip(mids, his, strict=True)]],
                fmt="none", ecolor="black", capsize=3, lw=1)
    ax.axvline(1, color="black", lw=1.2)
    ax.set_xscale("log")
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel("headroom: measured/target for throughput, target/measured for time and memory\n"
                  "right of 1 (green) = met; whiskers = min..max over repeats")
    ax.set_title("xcombus against the targets (medians)")
    fig.tight_layout()
    fig.savefig(img / "targets.png", dpi=110)
    plt.close(fig)
    out.append(("targets.png", PLOTS["targets.png"]))

    # 2. Latency distributions (CDFs) from the last repeat.
    def cdf(ax: Any, key: str, label: str, scale: float = 1e3, **kw: Any) -> None:
        q = samples.get(key)
        if q:
            n = len(q)
            ax.plot([x * scale for x in q], [i / (n - 1) * 100 for i in range(n)], label=label, **kw)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    ax = axes[0]
    cdf(ax, "push_lat", "xcombus push, sequential (idle)")
    cdf(ax, "visible_ack", f"xcombus push acknowledged, at {meta['visible_rate']:,}/s")
    cdf(ax, "visible", f"xcombus push → visible in view, at {meta['visible_rate']:,}/s")
    cdf(ax, "base_push", "baseline push (SQL commit)", ls="--", color="black")
    ax.axvline(50, color="#c62828", lw=0.8, ls=":")
    ax.text(50, 92, " 50 ms", color="#c62828", fontsize=8)
    ax.set_title("push latency")
    ax2 = axes[1]
    cdf(ax2, "pull_ev", "xcombus pull, eventual")
    cdf(ax2, "pull_ryw", "xcombus pull, read-your-writes")
    cdf(ax2, "big_pull_ev", f"xcombus pull, eventual, {meta['backlog']:,}-row view")
    cdf(ax2, "big_pull_ryw", f"xcombus pull, read-your-writes, {meta['backlog']:,}-row view")
    cdf(ax2, "base_pull", "baseline pull (SQL query)", ls="--", color="black")
    ax2.set_title("pull one key")
    ax3 = axes[2]
    cdf(ax3, "fanin_ev", "xcombus fan-in, eventual")
    cdf(ax3, "fanin_ryw", "xcombus fan-in, read-your-writes")
    cdf(ax3, "base_fanin", "baseline fan-in (SQL IN query)", ls="--", color="black")
    ax3.set_title("fan-in pull over 1,000 map indexes")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for a in axes:
        a.set_xscale("log")
        lo, hi = a.get_xlim()
        a.xaxis.set_major_locator(LogLocator(subs=(1,) if hi / lo > 1000 else (1, 2, 5)))
        a.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        a.xaxis.set_minor_formatter(NullFormatter())
        a.set_xlabel("latency (ms, log scale)")
        a.set_ylabel("percentile")
        a.set_ylim(0, 100)
        a.legend(fontsize=7.5, loc="lower right")
    fig.suptitle("Latency distributions (last repeat; each curve is a CDF: further left is faster)")
    fig.tight_layout()
    fig.savefig(img / "latency.png", dpi=110)
    plt.close(fig)
    out.append(("latency.png", PLOTS["latency.png"]))

    # 3. xcombus against the baseline.
    pairs = [("push throughput\n(pushes/s, higher is better)", "push_tput_1000", "base_push_tput", 1),
             ("pull one key p50\n(ms, lower is better)", "pull_ryw_p50", "base_pull_p50", 1),
             ("fan-in over 1,000 p50\n(ms, lower is better)", "fanin_ryw_p50", "base_fanin_p50", 1)]
    pairs = [p for p in pairs if p[1] in vals and p[2] in vals]
    if pairs:
        fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 4.2))
        for ax, (title, x, b, _) in zip(list(axes) if len(pairs) > 1 else [axes], pairs, strict=True):
            xv, bv = median(vals[x]), median(vals[b])
            bars = ax.bar(["xcombus", "SQL baseline"], [xv, bv], color=["#1565c0", "#757575"])
            ax.bar_label(bars, labels=[fmt(xv), fmt(bv)])
            ax.margins(y=0.15)
            ratio = xv / bv
            ax.set_title(f"{title}\nxcombus/baseline = {ratio:.3g}", fontsize=10)
            if max(xv, bv) / max(min(xv, bv), 1e-12) > 20:
                ax.set_yscale("log")
        fig.suptitle("xcombus (read-your-writes) against an Airflow-style SQL XCom table on SQLite, same run")
        fig.tight_layout()
        fig.savefig(img / "baseline.png", dpi=110)
        plt.close(fig)
        out.append(("baseline.png", PLOTS["baseline.png"]))

    # 4. Materializer RSS through the backlog.
    if samples.get("rss_t"):
        fig, ax = plt.subplots(figsize=(9, 4.2))
        ax.plot(samples["rss_t"], samples["rss_mib"], color="#6a1b9a",
                label="RSS, materializer + writer child (MiB)")
        ax.axhline(150, color="#c62828", ls=":", lw=1)
        ax.text(0, 152, "150 MiB target", color="#c62828", fontsize=8)
        ax.set_xlabel("seconds since the materializer process was spawned")
        ax.set_ylabel("resident set size (MiB)")
        ax.set_ylim(0, max(170, max(samples["rss_mib"]) * 1.1))
        ax2 = ax.twinx()
        ax2.plot(samples["rss_t"], [a / 1e3 for a in samples["rss_applied"]], color="#2e7d32",
                 label="events applied (thousands)")
        ax2.set_ylabel("events applied to the view (thousands)")
        ax2.grid(False)
        lines = ax.get_lines()[:1] + ax2.get_lines()
        ax.legend(lines, [ln.get_label() for ln in lines], loc="lower right", fontsize=8)
        ax.set_title(f"xcombus materialize draining a {meta['backlog']:,}-event "
                     "backlog (last repeat)")
        fig.tight_layout()
        fig.savefig(img / "materializer_rss.png", dpi=110)
        plt.close(fig)
        out.append(("materializer_rss.png", PLOTS["materializer_rss.png"]))

    # 5. Push throughput against concurrency.
    conc = sorted(c for c in PUSH_CONCURRENCY if push_tput(c) in vals)
    if conc:
        fig, ax = plt.subplots(figsize=(7, 4))
        meds = [median(vals[push_tput(c)]) for c in conc]
        lows = [m - min(vals[push_tput(c)]) for c, m in zip(conc, meds, strict=True)]
        highs = [max(vals[push_tput(c)]) - m for c, m in zip(conc, meds, strict=True)]
        ax.errorbar(conc, meds, yerr=[lows, highs],
                    marker="o", capsize=4, label="xcombus")
        ax.axhline(100_000, color="#c62828", ls=":", lw=1, label="target 100,000/s")
        if "base_push_tput" in vals:
            ax.axhline(median(vals["base_push_tput"]), color="black", ls="--", lw=1,
                       label="SQL baseline (sequential)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(conc)
        ax.set_xticklabels([f"{c:,}" for c in conc])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("concurrent task instances (one coroutine each, awaiting each push)")
        ax.set_ylabel("acknowledged pushes/s")
        ax.set_title("Push throughput, one process, acks=all")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(img / "push_throughput.png", dpi=110)
        plt.close(fig)
        out.append(("push_throughput.png", PLOTS["push_throughput.png"]))
    return out
