"""bench/scaling.png: step latency (p50) against parameters, log-log, one line per system,
one panel per tensor layout."""

from __future__ import annotations

from pathlib import Path

from bench.peers.results import PeerCell

# key -> (colour, line style, marker); floors are grey-ish and dashed
STYLE = {
    "optd/redis/binary": ("#d62728", "-", "o"),
    "optd/redis/binary/2p": ("#ff7f0e", "-", "s"),
    "optd/memory/binary": ("#e377c2", "-", "^"),
    "optd/redis/json": ("#d62728", ":", "o"),
    "optd/memory/json": ("#e377c2", ":", "^"),
    "ray": ("#1f77b4", "-", "D"),
    "naive": ("#2ca02c", "-", "v"),
    "echo/binary": ("#7f7f7f", "--", "."),
    "echo/json": ("#7f7f7f", ":", "."),
    "echo_redis/binary": ("#000000", "--", "x"),
    "numpy": ("#9467bd", "--", "+"),
    "torch": ("#8c564b", "--", "*"),
}


def plot(cells: list[PeerCell], labels: dict[str, str], path: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layouts = sorted({c.parts for c in cells})
    fig, axes = plt.subplots(1, len(layouts), figsize=(7.5 * len(layouts), 6.5), sharey=True)
    axes = list(axes) if len(layouts) > 1 else [axes]
    for ax, parts in zip(axes, layouts, strict=True):
        for key, label in labels.items():
            pts = sorted((c.n, c.p50) for c in cells if c.key == key and c.parts == parts)
            if not pts:
                continue
            colour, style, marker = STYLE.get(key, ("#17becf", "-", "o"))
            xs, ys = zip(*pts, strict=True)
            width = 2.6 if key in ("optd/redis/binary", "ray") else 1.5
            ax.plot(
                xs, ys, linestyle=style, marker=marker, color=colour, linewidth=width, label=label
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{'one tensor' if parts == 1 else f'{parts} tensors'}", fontsize=12)
        ax.set_xlabel("parameters (float32)", fontsize=11)
        ax.grid(True, which="major", alpha=0.4)
        ax.grid(True, which="minor", alpha=0.12)
    axes[0].set_ylabel("step latency, p50 (ms)", fontsize=11)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=4, fontsize=9.5, frameon=False)
    fig.suptitle(
        "Adam step latency vs. parameters: optd vs. a Ray actor parameter server, a naive JSON "
        f"server and floors\n{subtitle}",
        fontsize=12,
    )
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
