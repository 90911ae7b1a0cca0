"""`python -m benchmarks.zero_cost` end to end on a tiny sample (space-level proxies: no networks run)."""
from __future__ import annotations

import json

from benchmarks.zero_cost import main


def test_benchmark_writes_summary_plot_and_resumes_from_its_chunks(prepared, tmp_path, capsys):
    out, cache = tmp_path / "bench", tmp_path / "cache"
    argv = ["--sample", "5", "--proxies", "params,flops", "--chunk", "2", "--out", str(out), "--cache", str(cache),
            "--no-progress", f"data.table={prepared['table']}", f"data.aux_shards={prepared['shards']}",
            "data.prepare=false", "--predictor-summary", str(tmp_path / "absent.json")]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 5 and summary["chunks"] == 3 and summary["reused_chunks"] == 0
    assert set(summary["proxies"]) == {"params", "flops"}
    assert summary["proxies"]["params"]["crosscheck_spearman"] is None or \
        summary["proxies"]["params"]["crosscheck_spearman"] > 0.99
    assert (out / "kendall.png").stat().st_size > 0 and (out / "scores.parquet").is_file()
    assert "| params |" in (out / "summary.md").read_text()
    assert len(list(cache.glob("*.json"))) == 3
    capsys.readouterr()
    assert main(argv) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["reused_chunks"] == 3 and again["proxies"] == summary["proxies"]


def test_benchmark_bad_input_is_an_error(prepared, tmp_path, capsys):
    argv = ["--sample", "5", "--proxies", "params,nope", "--out", str(tmp_path / "b"), "--cache", str(tmp_path / "c"),
            f"data.table={prepared['table']}", f"data.aux_shards={prepared['shards']}", "data.prepare=false"]
    assert main(argv) == 2
    assert "nope" in capsys.readouterr().err and not (tmp_path / "b").exists()
