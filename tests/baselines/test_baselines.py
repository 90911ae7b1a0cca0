"""Baselines run by the trainer's command: the random forest on graph features beats the parameter-count floor."""
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.train import main, train

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "nb201_tiny.yaml")


def _run(tiny_overrides, *more):
    return train(load_config(TINY, list(tiny_overrides) + ["data.num_train=156", *more]))


def test_random_forest_beats_the_parameter_count_floor_at_156_cells(tiny_overrides):
    floor = _run(tiny_overrides, "model.variant=params", "run.name=params")
    rf = _run(tiny_overrides, "model.variant=rf", "model.baseline={n_estimators: 100}", "run.name=rf")
    assert floor["n_eval"] == rf["n_eval"] == 15625
    assert rf["kendall_tau"] > floor["kendall_tau"] + 0.1, (rf["kendall_tau"], floor["kendall_tau"])
    assert rf["kendall_tau_unique"] > floor["kendall_tau_unique"]
    run = Path(rf["run_dir"])
    preds = pq.read_table(run / "predictions.parquet")
    assert preds.num_rows == 15625 and preds.column("in_train").to_numpy().sum() == 156
    for name in ("config.yaml", "env.json", "results.json", "results.md", "scatter.png"):
        assert (run / name).stat().st_size > 0, name


def test_unknown_baseline_setting_is_named(capsys, tiny_overrides):
    rc = main(["--config", TINY, *tiny_overrides, "model.variant=rf", "model.baseline={n_trees: 3}"])
    assert rc == 2 and "n_trees" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="baselines: params, rf"):
        load_config(TINY, ["model.variant=forest"])
