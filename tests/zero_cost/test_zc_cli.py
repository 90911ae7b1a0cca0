"""`python -m pipeline.zero_cost`: bad input fails before any work; a run writes the scored table and report."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.data.tables import load_table
from pipeline.spaces import get_space
from pipeline.zero_cost.cli import main

TINY = "configs/nb201_tiny.yaml"


@pytest.fixture
def base_args(prepared):
    return ["--config", TINY, "--no-progress", "--threads", "1", "--batch-size", "8",
            f"data.table={prepared['table']}", f"data.aux_shards={prepared['shards']}", "data.prepare=false"]


@pytest.mark.parametrize("extra, culprit", [
    (["--proxies", "synflow,bogus"], "bogus"),
    (["--proxies", "synflow", "--label", "cifar10_test_200ep", "no_such_column"], "no_such_column"),
    (["--proxies", "synflow", "--sample", "20000"], "20000"),
    (["--proxies", "zico", "--batches", "1"], "zico"),
    (["--proxies", "synflow", "--only-shared"], "--crosscheck"),
    (["--proxies", "synflow", "--label", "cifar10_test_200ep", "data.num_train=3"], "data.num_train=3"),
])
def test_bad_input_is_an_error_before_any_work(base_args, tmp_path, capsys, extra, culprit):
    out = tmp_path / "scores.parquet"
    assert main(base_args + extra + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and culprit in err
    assert not list(tmp_path.iterdir())  # nothing written, not even a temp file


def test_unknown_proxy_lists_the_registered_ones(base_args, tmp_path, capsys):
    assert main(base_args + ["--proxies", "synflw", "--out", str(tmp_path / "t.parquet")]) == 2
    assert "registered: fisher, flops, grad_norm" in capsys.readouterr().err


def test_a_run_writes_the_scored_sample_and_its_report(base_args, prepared, tmp_path, capsys):
    out = tmp_path / "scores.parquet"
    rc = main(base_args + ["--proxies", "synflow,params,nwot", "--sample", "4", "--seed", "3", "--out", str(out),
                           "space.settings.cells_per_stage=1"])
    assert rc == 0
    table, source = load_table(out), load_table(prepared["table"])
    assert len(table) == 4 and set(table.archs) <= set(source.archs)
    assert {"zc_synflow", "zc_params", "zc_nwot", "cifar10_test_200ep", "iso_class"} <= set(table.columns)
    assert table.meta == source.meta  # still a core-schema table the trainer can read
    space = get_space("nb201", cells_per_stage=1)
    assert table.label("zc_params").tolist() == [space.cost(space.parse(a))["params"] for a in table.archs]
    assert np.isfinite(table.label("zc_synflow")).all()
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["n"] == 4 and report["labels"] == ["cifar10_test_200ep", "cifar10_valid_val_200ep"]
    for name in ("synflow", "params", "nwot"):
        assert set(report["proxies"][name]["correlations"]) == set(report["labels"])
        assert report["proxies"][name]["seconds_per_arch"] >= 0
    md = out.with_suffix(".md").read_text()
    assert "| synflow |" in md and md in capsys.readouterr().out


def test_crosscheck_flag_compares_with_the_reference_on_shared_cells(base_args, tmp_path):
    out = tmp_path / "x.parquet"
    rc = main(base_args + ["--proxies", "params,flops", "--sample", "6", "--crosscheck", "--only-shared",
                           "--out", str(out)])
    assert rc == 0
    cross = json.loads(out.with_suffix(".json").read_text())["crosscheck"]
    assert cross["params"]["n"] == 6 and cross["params"]["spearman"] == pytest.approx(1.0)
    assert cross["flops"]["spearman"] > 0.9
