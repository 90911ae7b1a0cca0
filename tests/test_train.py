"""The trainer end to end: the tiny config on the real NB201 table, resume, variants, bad input."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.config import load_config
from pipeline.train import main, train

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "nb201_tiny.yaml")


def _cfg(overrides, *more):
    return load_config(TINY, list(overrides) + list(more))


def test_smoke_run_scores_every_cell_and_writes_the_run_directory(tiny_overrides):
    summary = train(_cfg(tiny_overrides))
    run = Path(summary["run_dir"])
    assert summary["n_eval"] == 15625
    assert -1.0 <= summary["kendall_tau"] <= 1.0 and np.isfinite(summary["kendall_tau"])
    preds = pq.read_table(run / "predictions.parquet")
    assert preds.num_rows == 15625 and preds.column("in_train").to_numpy().sum() == 20
    assert np.ptp(preds.column("prediction").to_numpy()) > 0, "predictions collapsed to a constant"
    for name in ("config.yaml", "env.json", "results.json", "results.md", "scatter.png"):
        assert (run / name).stat().st_size > 0, name
    assert (run / "scatter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((run / "tb").glob("events.out.tfevents.*"))
    epochs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs if r["event"] == "epoch"] == [1, 2, 3]
    assert all("val_tau" in r for r in epochs if r["event"] == "epoch")
    assert (run / "checkpoints" / "latest").read_text().strip() == "epoch_0003.pt"
    # the resolved config round-trips; env.json names the code that ran (the tests run from a git checkout)
    assert load_config(run / "config.yaml").data.num_train == 20
    env = json.loads((run / "env.json").read_text())
    assert len(env["git_commit"]) == 40 and isinstance(env["git_dirty_pipeline"], bool)


def test_micro_batching_changes_speed_not_the_result(tiny_overrides):
    # dropout on, the ranking term (which compares the archs of an update) on, features on: still exact
    common = ["train.epochs=2", "train.accumulate=4", "data.num_train=16", "loss.rank_weight=1.0",
              "model.features=[graf]", "model.encoder.dropout=0.2", "data.val_archs=0"]
    preds, taus = [], []
    for micro in (1, 2, 4):
        s = train(_cfg(tiny_overrides, *common, f"train.micro_batch={micro}", f"run.name=mb{micro}"))
        preds.append(pq.read_table(Path(s["run_dir"]) / "predictions.parquet").column("prediction").to_numpy())
        taus.append(s["kendall_tau"])
    # equal up to float rounding (kernels differ with the batch shape, and 2 epochs amplify it: ~0.01
    # accuracy points); grouping-dependent dropout or aux batches gave whole points and tau changes of ~0.04
    assert np.abs(preds[0] - preds[1]).max() < 0.05 and np.abs(preds[0] - preds[2]).max() < 0.05
    assert max(taus) - min(taus) < 5e-3, taus


def test_one_update_has_the_same_gradient_however_it_is_micro_batched(tiny_overrides):
    from pipeline import distributed
    from pipeline import train as T
    from pipeline.spaces import space_from_config

    def grads(micro):
        cfg = _cfg(tiny_overrides, f"train.micro_batch={micro}", "train.accumulate=4", "data.num_train=16",
                   "model.encoder.dropout=0.2", "model.hyper.unlabelled=1")
        T.setup_runtime(cfg)
        space = space_from_config(cfg.space)
        data = T.load_training_data(cfg, space)
        train_idx = T.split_archs(cfg, len(data.archs)).train
        feats = torch.tensor(data.features.values, dtype=torch.float32)
        y = data.labels[cfg.data.train_label]
        targets = torch.tensor((y - y[train_idx].mean()) / y[train_idx].std(), dtype=torch.float32)
        obj = T.build_objective(cfg, space, data.num_classes, feats.shape[1])
        obj.model.set_feature_stats(feats[torch.as_tensor(train_idx)])
        opt, _ = T.build_optimizer(cfg, obj)
        rt = distributed.Runtime()
        rt.wrap(obj, opt)
        rt.step = lambda: None  # keep the gradient, skip the optimizer step
        T.run_update(cfg, rt, obj, data, T.UpdateBatch(train_idx[:4], 0), targets, feats)
        return {n: p.grad.clone() for n, p in obj.named_parameters() if p.grad is not None}

    a, b = grads(1), grads(4)
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5


def test_pure_ranking_loss_freezes_the_output_bias_and_mse_trains_it(tiny_overrides):
    # a ranking loss ignores a common shift of the predictions: the bias would get only rounding noise,
    # which Adam turns into lr-sized random steps (and runs that differ only in grouping would drift apart)
    from pipeline import train as T
    from pipeline.spaces import space_from_config

    for mse, trainable in ((0.0, False), (1.0, True)):
        cfg = _cfg(tiny_overrides, f"loss.mse_weight={mse}", "loss.rank_weight=1.0")
        bias = T.build_objective(cfg, space_from_config(cfg.space), 10, 4).model.regressor.mlp[-1].bias
        assert bias.requires_grad is trainable
        if not trainable:
            assert float(bias.abs().max()) == 0.0


def test_resumed_run_ends_identical_to_an_uninterrupted_one(tiny_overrides, tmp_path):
    full = train(_cfg(tiny_overrides, "run.name=full", "train.epochs=4"))
    part = train(_cfg(tiny_overrides, "run.name=resumed", "train.epochs=4"), stop_after_epoch=2)
    assert part["stopped_at_epoch"] == 2
    resumed = train(_cfg(tiny_overrides, "run.name=resumed", "train.epochs=4"))
    a = pq.read_table(Path(full["run_dir"]) / "predictions.parquet").column("prediction").to_numpy()
    b = pq.read_table(Path(resumed["run_dir"]) / "predictions.parquet").column("prediction").to_numpy()
    assert np.array_equal(a, b)
    assert full["kendall_tau"] == resumed["kendall_tau"]
    sa = torch.load(Path(full["run_dir"]) / "checkpoints" / "epoch_0004.pt", weights_only=False)
    sb = torch.load(Path(resumed["run_dir"]) / "checkpoints" / "epoch_0004.pt", weights_only=False)
    for k, v in sa["objective"].items():
        assert torch.equal(v, sb["objective"][k]), k
    # the resumed run's metrics log has each epoch once
    lines = [json.loads(l) for l in (Path(resumed["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines if r["event"] == "epoch"] == [1, 2, 3, 4]


@pytest.mark.parametrize("variant", ["np", "hypernas_p"])
def test_baseline_variants_train_and_score(tiny_overrides, variant):
    s = train(_cfg(tiny_overrides, f"model.variant={variant}", "train.epochs=2"))
    assert s["n_eval"] == 15625 and np.isfinite(s["kendall_tau"])


def test_hypernas_h_reports_generated_network_accuracy(tiny_overrides):
    s = train(_cfg(tiny_overrides, "model.variant=hypernas_h", "train.epochs=1", "eval.hyper_archs=8",
                   "eval.hyper_images=50"))
    assert 0.0 <= s["generated_aux_acc_mean"] <= 1.0 and s["hyper_archs"] == 8


def test_script_and_module_entry_points_both_start():
    for cmd in ([sys.executable, "pipeline/train.py", "--help"], [sys.executable, "-m", "pipeline.train", "--help"]):
        out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "key=value" in out.stdout, out.stderr


# ------------------------------------------------------------------------------------------------
# Bad input: a clear error naming the culprit, exit status 2, no run directory written


def _expect_error(capsys, args, *fragments, run_root=None):
    assert main(["--config", TINY, *args]) == 2
    err = capsys.readouterr().err
    for f in fragments:
        assert f in err, err
    if run_root is not None:
        assert not Path(run_root).exists() or not any(Path(run_root).iterdir())


def _write_table(path, archs, label):
    pq.write_table(pa.table({"index": np.arange(len(archs)), "arch": archs, "cifar10_valid_val_200ep": label,
                             "cifar10_test_200ep": label}), path)


@pytest.fixture(scope="module")
def real_rows(prepared):
    t = pq.read_table(prepared["table"])
    return t.column("arch").to_pylist(), t.column("cifar10_valid_val_200ep").to_numpy()


def test_unknown_config_key(capsys, tiny_overrides, tmp_path):
    _expect_error(capsys, [*tiny_overrides, "train.epoch=3"], "unknown config key 'train.epoch'", "epochs",
                  run_root=tmp_path / "runs")


def test_missing_label_column_lists_the_available_ones(capsys, tiny_overrides, tmp_path):
    _expect_error(capsys, [*tiny_overrides, "data.train_label=cifar100_valid_val_200ep"],
                  "cifar100_valid_val_200ep", "cifar10_test_200ep", run_root=tmp_path / "runs")


def test_more_training_cells_than_the_pool(capsys, tiny_overrides, tmp_path):
    _expect_error(capsys, [*tiny_overrides, "data.num_train=20000"], "20000", "15625", run_root=tmp_path / "runs")


def test_malformed_arch_in_the_table_is_named(capsys, tiny_overrides, tmp_path, real_rows):
    archs, label = real_rows
    archs = list(archs[:100])
    archs[17] = "|nor_conv_3x3~0|+|nor_conv_3x3~0|+|none~0|none~1|none~2|"
    _write_table(tmp_path / "bad.parquet", archs, label[:100])
    _expect_error(capsys, [*tiny_overrides, f"data.table={tmp_path / 'bad.parquet'}"], archs[17],
                  run_root=tmp_path / "runs")


def test_unknown_op_in_the_table_is_named(capsys, tiny_overrides, tmp_path, real_rows):
    archs, label = real_rows
    archs = list(archs[:100])
    archs[3] = archs[3].replace("~0|", "~0|", 1).replace(archs[3].split("~")[0][1:], "sep_conv_3x3", 1)
    _write_table(tmp_path / "bad.parquet", archs, label[:100])
    _expect_error(capsys, [*tiny_overrides, f"data.table={tmp_path / 'bad.parquet'}"], "sep_conv_3x3",
                  run_root=tmp_path / "runs")


@pytest.mark.parametrize("bad_value, fragment", [(float("nan"), "NaN"), (140.0, "outside")])
def test_nan_or_out_of_range_labels(capsys, tiny_overrides, tmp_path, real_rows, bad_value, fragment):
    archs, label = real_rows
    label = label[:100].copy()
    label[5] = bad_value
    _write_table(tmp_path / "bad.parquet", archs[:100], label)
    _expect_error(capsys, [*tiny_overrides, f"data.table={tmp_path / 'bad.parquet'}"], fragment,
                  "cifar10_valid_val_200ep", archs[5], run_root=tmp_path / "runs")


def test_corrupt_shard_is_named(capsys, tiny_overrides, tmp_path, prepared):
    shards = tmp_path / "shards"
    shutil.copytree(prepared["shards"], shards)
    victim = sorted(shards.glob("cifar10-train-*.tar"))[1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\0" * 64
    victim.write_bytes(bytes(data))
    _expect_error(capsys, [*tiny_overrides, f"data.aux_shards={shards}"], victim.name, run_root=tmp_path / "runs")


def test_missing_table_without_prepare(capsys, tiny_overrides, tmp_path):
    _expect_error(capsys, [*tiny_overrides, f"data.table={tmp_path / 'none.parquet'}"], "none.parquet",
                  "data_prep.tables", run_root=tmp_path / "runs")
