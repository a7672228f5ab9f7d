"""PNG plots of the benchmark series (matplotlib, the `bench` extra)."""

from __future__ import annotations

from pathlib import Path

from _report import Result


def _rolling(values: list[float], width: int = 20) -> list[float]:
    """Rolling median, so one slow commit (a checkpoint, a busy disk) does not hide the trend."""
    import statistics

    return [statistics.median(values[max(0, i - width + 1):i + 1]) for i in range(len(values))]


def save_plots(results: dict[str, Result], out: Path, size: str) -> list[Path]:
    """Append latency against log length, open time against file count; the paths written."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    saved = []
    if "core" in results:
        fig, ax = plt.subplots(figsize=(7, 4))
        for engine, ms in results["core"].series["append_ms"].items():
            ax.plot(range(1, len(ms) + 1), _rolling(ms), label=engine)
        ax.set(xlabel="log length (commits)", ylabel="ms per append of 100 rows (rolling median of 20)",
               title=f"Append latency against log length ({size})", yscale="log")
        ax.legend()
        saved.append(_save(fig, out / "bench-append-latency.png"))
    if "open" in results:
        series = dict(results["open"].series["open_ms"])
        files = series.pop("files")
        fig, ax = plt.subplots(figsize=(7, 4))
        for engine, ms in series.items():
            ax.plot(files, ms, marker="o", label=engine)
        ax.set(xlabel="data files in the table", ylabel="ms to open the latest version (best of 5)",
               title=f"Open time against file count ({size})", xscale="log", yscale="log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
        ax.legend()
        saved.append(_save(fig, out / "bench-open-time.png"))
    return saved


def _save(fig: object, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(path, dpi=110)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return path
