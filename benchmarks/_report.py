"""What every benchmark's `main(argv)` returns: a Markdown table, ratios and plot series.

`python -m benchmarks` (benchmarks/__main__.py) collects these, prints the ratios,
writes the tables into docs/benchmarks.md and draws the plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Result:
    table: str  # Markdown, as printed
    ratios: list[tuple[str, float]]  # (measure, lakeflow / peer): below 1, lakeflow is faster
    series: dict[str, Any] = field(default_factory=dict)  # data for plots


def _number(cell: str) -> bool:
    try:
        float(cell.replace(",", ""))
    except ValueError:
        return False
    return True


def markdown(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; floats get two decimals, columns of numbers are right-aligned."""
    cells = [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in r] for r in rows]
    align = ["---:" if cells and all(_number(r[i]) for r in cells) else "---" for i in range(len(header))]
    return "\n".join("| " + " | ".join(line) + " |" for line in [list(header), align, *cells])
