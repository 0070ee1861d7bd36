"""bench/gpu.py (`make bench-gpu` on a GPU) runs its whole path on CPU in dry mode."""

from __future__ import annotations

import json

from bench import gpu


def test_dry_run_prints_one_json_line_with_every_figure(capsys):
    assert gpu.main(["--dry", "--tasks", "1", "2", "--steps", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["dry"] is True and result["device"] == "cpu" and result["tasks"] == [1, 2]
    assert result["bandwidth_gb_s"] > 0
    for arch in ("small", "medium"):
        figures = result[arch]
        for key in ("v2_eager_steps_s", "v2_dynamic_steps_s", "hf_generate_steps_s", "graphs_vs_hf",
                    "bandwidth_share"):
            assert set(figures[key]) == {"1", "2"}, key
            assert all(value > 0 for value in figures[key].values()), key
        assert figures["v2_graphs_steps_s"] == {}  # no capture without CUDA
