"""The human table and the one JSON line."""

from __future__ import annotations

import json
from dataclasses import dataclass

# Higher is better for these ...
TARGETS = {"single_vs_raw": 1.0, "batched_vs_raw": 1.0, "int8_speedup": 3.0, "throughput_vs_baseline": 8.0,
           "realtime_factor_1": 0.6, "realtime_factor_8": 2.5, "bandwidth_share_1": 0.4,
           "drift_top1_agreement": 0.85}
# ... lower is better for these.
CEILINGS = {"poisson_p95_vs_static": 0.5, "poisson_makespan_vs_static": 1.0,
            "first_chunk_under_load_vs_static": 0.5, "streaming_overhead": 0.05}
INFORMATIONAL = ("step_8_vs_1", "cpu_default_speedup")


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


def ratios(baseline_s: float, raw1_s: float, single_s: float, raw8_s: float, batched_s: float,
           batched_int8_s: float) -> dict:
    return {
        "single_vs_raw": round(raw1_s / single_s, 3),
        "batched_vs_raw": round(raw8_s / batched_s, 3),
        "throughput_vs_baseline": round(baseline_s / batched_int8_s, 3),
        "throughput_vs_baseline_fp32": round(baseline_s / batched_s, 3),
    }


def targets_met(result: dict) -> dict[str, bool]:
    # A figure that was not measured (e.g. ``--no-realtime``) is neither met nor missed: left out.
    met = {key: result[key] >= target for key, target in TARGETS.items() if key in result}
    met.update({key: result[key] <= ceiling for key, ceiling in CEILINGS.items() if key in result})
    return met


def target_text(key: str) -> str:
    return f">= {TARGETS[key]:g}" if key in TARGETS else f"<= {CEILINGS[key]:g}"


def json_line(result: dict) -> str:
    # The headline figures come first.
    head = {key: result[key] for key in (*TARGETS, *CEILINGS, *INFORMATIONAL, "step_ms_1", "step_ms_8", "drift")
            if key in result}
    return json.dumps({**head, **{k: v for k, v in result.items() if k not in head}}, separators=(", ", ": "))
