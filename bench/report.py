"""The human table and the one JSON line."""

from __future__ import annotations

import json
from dataclasses import dataclass

TARGETS = {"throughput_vs_baseline": 5.0, "batched_vs_raw": 0.85, "single_vs_raw": 0.9}


@dataclass
class Row:
    name: str
    wall_s: float  # wall seconds for all of this row's tasks
    tasks: int
    note: str = ""


def table(rows: list[Row], new_seconds: float) -> str:
    lines = [f"{'run':<24}{'tasks':>6}{'wall s':>10}{'s/task':>10}{'audio s/s':>11}  note", "-" * 78]
    for row in rows:
        lines.append(f"{row.name:<24}{row.tasks:>6}{row.wall_s:>10.2f}{row.wall_s / row.tasks:>10.2f}"
                     f"{row.tasks * new_seconds / row.wall_s:>11.3f}  {row.note}")
    return "\n".join(lines)


def ratios(baseline_s: float, raw1_s: float, single_s: float, raw8_s: float, batched_s: float) -> dict:
    """All as 'higher is better'; raw-relative ones are at most about 1."""
    return {
        "throughput_vs_baseline": round(baseline_s / batched_s, 3),
        "batched_vs_raw": round(raw8_s / batched_s, 3),
        "single_vs_raw": round(raw1_s / single_s, 3),
    }


def targets_met(result: dict) -> dict[str, bool]:
    return {key: result[key] >= target for key, target in TARGETS.items()}


def json_line(result: dict) -> str:
    # The ratios come first so the line starts with {"throughput_vs_baseline": ...
    head = {key: result[key] for key in TARGETS}
    return json.dumps({**head, **{k: v for k, v in result.items() if k not in head}}, separators=(", ", ": "))
