"""The cross-check against NAS-Bench-Suite-Zero's values: per-proxy rank correlation on the shared cells."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from pipeline.zero_cost.crosscheck import crosscheck, load_reference, main


@pytest.fixture(scope="module")
def reference_csv(shared_data):
    return shared_data / "nasbench201" / "nb201_cifar10_unique_zc_flops_params.csv"


@pytest.fixture(scope="module")
def reference(reference_csv):
    return load_reference(reference_csv)


def test_reference_is_keyed_by_canonical_arch_string(reference):
    assert len(reference) == 9445
    cell = reference["|avg_pool_3x3~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_1x1~2|"]
    assert cell["params"] == pytest.approx(0.129306) and "synflow" in cell and "net" not in cell


def test_crosscheck_on_a_handful_of_cells(reference):
    archs = sorted(reference)[:7] + ["not-a-shared-cell"]
    synflow = np.array([reference[a]["synflow"] for a in archs[:7]] + [1.0])
    scores = {"synflow": synflow, "nwot": -np.array([reference[a]["nwot"] for a in archs[:7]] + [0.0]),
              "zico": np.arange(8.0)}  # zico is not in the reference: skipped
    result = crosscheck(archs, scores, reference)
    assert set(result) == {"synflow", "nwot"}
    assert result["synflow"]["n_shared"] == 7 and result["synflow"]["n"] == 7
    assert result["synflow"]["spearman"] == pytest.approx(1.0)
    assert result["nwot"]["spearman"] == pytest.approx(-1.0)


def test_crosscheck_leaves_out_non_finite_scores(reference):
    archs = sorted(reference)[:5]
    values = np.array([reference[a]["params"] for a in archs])
    values[1] = np.nan
    result = crosscheck(archs, {"params": values}, reference)
    assert result["params"]["n"] == 4 and result["params"]["n_dropped"] == 1


def test_cli_reads_a_scored_table(tmp_path, reference, reference_csv, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq
    archs = sorted(reference)[:6]
    path = tmp_path / "scored.parquet"
    pq.write_table(pa.table({"arch": archs, "zc_params": [reference[a]["params"] for a in archs]}), path)
    assert main(["--scores", str(path), "--reference", str(reference_csv), "--out", str(tmp_path / "x.json")]) == 0
    assert "| params | 1.000 |" in capsys.readouterr().out
    assert (tmp_path / "x.json").is_file()


def test_cli_errors_name_the_culprit(tmp_path, reference_csv, capsys):
    assert main(["--scores", str(tmp_path / "missing.parquet"), "--reference", str(reference_csv)]) == 2
    assert "missing.parquet" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    with open(bad, "w", newline="") as fh:
        csv.writer(fh).writerows([["arch", "x"], ["a", "1"]])
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"arch": ["a"], "zc_x": [1.0]}), tmp_path / "t.parquet")
    assert main(["--scores", str(tmp_path / "t.parquet"), "--reference", str(bad)]) == 2
    assert "net_str" in capsys.readouterr().err


def test_cli_compares_two_scored_tables(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq
    archs = ["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
             "|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|",
             "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"]
    pq.write_table(pa.table({"arch": archs, "zc_nwot": [1.0, 2.0, 3.0]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"arch": archs[::-1], "zc_nwot": [30.0, 20.0, 10.0]}), tmp_path / "b.parquet")
    assert main(["--scores", str(tmp_path / "a.parquet"), "--against", str(tmp_path / "b.parquet")]) == 0
    assert "| nwot | 1.000 |" in capsys.readouterr().out


def test_label_option_correlates_both_sides_with_the_label(reference):
    archs = sorted(reference)[:6]
    theirs = np.array([reference[a]["params"] for a in archs])
    result = crosscheck(archs, {"params": theirs}, reference, label=theirs * 2.0)
    assert result["params"]["ours_vs_label"] == pytest.approx(1.0)
    assert result["params"]["reference_vs_label"] == pytest.approx(1.0)
