"""data_prep.tables nats_bench: NATS-Bench topology / NAS-Bench-201 official files -> the core schema.

The converter's logic is checked on a small object with the API's methods (always); the official files
(the single .pickle.pbz2, the fast-mode directory, a NAS-Bench-201 .pth) are written here with the
`nats_bench` package's own result classes and read back through it, where the optional extra
`[benchmarks]` is installed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from data_prep import tables as T
from data_prep.tables.nats_bench import table_from_api
from data_prep.tables.schema import META_KEY
from pipeline.errors import DataError
from pipeline.spaces import get_space

ARCHS = ["|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
         "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
         "|none~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_1x1~2|"]
DATASETS = {"cifar10-valid": 0.0, "cifar10": 3.0, "cifar100": -20.0, "ImageNet16-120": -40.0}
SEEDS = (777, 888)


def _acc(index: int, dataset: str, split: str, epoch: int, epochs: int, seed: int) -> float:
    """A distinct accuracy per (arch, dataset, split, epoch, seed); the last epoch is what counts."""
    return 60.0 + 5 * index + DATASETS[dataset] + (2.0 if split == "x-valid" else 0.0) + 10 * epoch / epochs \
        + (seed == 888) - (epochs == 12) * 7


def _expected(index: int, dataset: str, split: str, hp: str) -> float:
    epochs = int(hp)
    return float(np.mean([_acc(index, dataset, split, epochs - 1, epochs, s) for s in SEEDS]))


EXPECTED_COLUMNS = {  # column -> (dataset, split)
    "cifar10_valid_val": ("cifar10-valid", "x-valid"), "cifar10_test": ("cifar10", "ori-test"),
    "cifar100_val": ("cifar100", "x-valid"), "cifar100_test": ("cifar100", "x-test"),
    "imagenet16_120_val": ("ImageNet16-120", "x-valid"), "imagenet16_120_test": ("ImageNet16-120", "x-test")}


def _check_table(t, hps=("200", "12")) -> None:
    names = [f"{c}_{hp}ep" for hp in hps for c in EXPECTED_COLUMNS]
    assert t.column_names == ["index", "arch", *names, "flops", "params", "iso_class"]
    rows = t.to_pydict()
    space = get_space("nb201")
    assert rows["arch"] == [space.to_str(space.parse(a)) for a in ARCHS] and rows["index"] == [0, 1, 2]
    for hp in hps:
        for c, (ds, split) in EXPECTED_COLUMNS.items():
            assert rows[f"{c}_{hp}ep"] == pytest.approx([_expected(i, ds, split, hp) for i in range(3)]), (c, hp)
    assert rows["flops"] == pytest.approx([10.0, 11.0, 12.0]) and rows["params"] == pytest.approx([0.5, 1.5, 2.5])
    meta = json.loads(t.schema.metadata[META_KEY])
    assert meta["builder"] == "nats_bench" and meta["space"] == "nb201" and meta["label_columns"] == names


# --------------------------------------------------------------------------- the API's shape, no package


class FakeNATS:
    """What the converter uses of nats_bench's topology API: len, [i], get_more_info, get_cost_info."""

    def __init__(self, archs=ARCHS, missing=()):
        self.meta_archs = list(archs)
        self.missing = set(missing)  # (index, dataset, hp) without results

    def __len__(self) -> int:
        return len(self.meta_archs)

    def __getitem__(self, i: int) -> str:
        return self.meta_archs[i]

    def get_more_info(self, index, dataset, iepoch=None, hp="12", is_random=True):
        assert is_random is False  # the table holds the mean over seeds
        if (index, dataset, hp) in self.missing or dataset not in DATASETS or hp not in ("12", "200"):
            raise KeyError(dataset)
        info = {"train-accuracy": 99.0}
        if dataset == "cifar10-valid":
            info["valid-accuracy"] = _expected(index, dataset, "x-valid", hp)
            info["test-accuracy"] = -1.0  # trained on train only: not the cifar10 test column
        elif dataset == "cifar10":
            info["test-accuracy"] = _expected(index, dataset, "ori-test", hp)
        else:
            info["valid-accuracy"] = _expected(index, dataset, "x-valid", hp)
            info["test-accuracy"] = _expected(index, dataset, "x-test", hp)
        return info

    def get_cost_info(self, index, dataset, hp="12"):
        return {"flops": 10.0 + index, "params": 0.5 + index, "latency": 0.01}


def test_table_from_api_shape() -> None:
    _check_table(table_from_api(FakeNATS(), "fake"))
    _check_table(table_from_api(FakeNATS(), "fake", hps=("12",)), hps=("12",))


def test_api_errors_name_the_architecture() -> None:
    with pytest.raises(DataError, match="fake: architecture 2 \\(.*\\): no valid-accuracy on cifar100 at hp 12"):
        table_from_api(FakeNATS(missing={(2, "cifar100", "12")}), "fake")
    with pytest.raises(DataError, match="fake: architecture 0 has no results for hp 90"):
        table_from_api(FakeNATS(), "fake", hps=("90",))
    with pytest.raises(DataError, match="fake: architecture 1: .*unknown op 'conv_9x9'"):
        table_from_api(FakeNATS(archs=[ARCHS[0], ARCHS[1].replace("nor_conv_3x3", "conv_9x9"), ARCHS[2]]), "fake")


def test_missing_package_says_which_extra(tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "nats_bench", None)  # `import nats_bench` now fails
    out = tmp_path / "t.parquet"
    assert T.main(["nats_bench", "--input", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == "error: the nats_bench format needs the optional package nats_bench: " \
                  "pip install -e '.[benchmarks]'\n"
    assert not out.exists()


# --------------------------------------------------------------------------- official files, via the package


@pytest.fixture(scope="module")
def nats():
    return pytest.importorskip("nats_bench", reason="optional extra [benchmarks] (nats_bench) not installed")


def _arch_results(nats, index: int, hp: str):
    """ArchResults of one architecture at one schedule, as NATS-Bench stores them: per dataset and
    seed a ResultsCount with per-epoch train and eval records."""
    epochs = int(hp)
    results = nats.ArchResults(index, ARCHS[index])
    splits = {"cifar10-valid": ("x-valid", "ori-test"), "cifar10": ("ori-test",),
              "cifar100": ("x-valid", "x-test", "ori-test"), "ImageNet16-120": ("x-valid", "x-test", "ori-test")}
    for ds, names in splits.items():
        for seed in SEEDS:
            rc = nats.ResultsCount(ds, None, {e: 99.0 for e in range(epochs)}, {e: 0.1 for e in range(epochs)},
                                   0.5 + index, 10.0 + index,
                                   {"arch_str": ARCHS[index], "channel": 16, "num_cells": 5, "class_num": 10},
                                   seed, epochs, [0.01])
            keys = [f"{n}@{e}" for n in names for e in range(epochs)]
            rc.update_eval({k: _acc(index, ds, k.split("@")[0], int(k.split("@")[1]), epochs, seed) for k in keys},
                           {k: 0.5 for k in keys}, {k: 0.1 for k in keys})
            results.update(ds, seed, rc)
    return results.state_dict()


@pytest.fixture(scope="module")
def results(nats) -> dict[int, dict[str, dict]]:
    return {i: {hp: _arch_results(nats, i, hp) for hp in ("12", "200")} for i in range(len(ARCHS))}


def test_single_file(nats, results, tmp_path: Path) -> None:
    base = tmp_path / "NATS-tss-v1_0-3ffb9.pickle"
    nats.pickle_save({"meta_archs": ARCHS, "arch2infos": results, "evaluated_indexes": [0, 1, 2]}, str(base))
    f = tmp_path / "NATS-tss-v1_0-3ffb9.pickle.pbz2"
    out = tmp_path / "t.parquet"
    assert T.main(["nats_bench", "--input", str(f), "--out", str(out)]) == 0
    t = pq.read_table(out)
    _check_table(t)
    assert json.loads(t.schema.metadata[META_KEY])["sources"][0]["sha256"] == T.file_sha256(f)


def test_fast_mode_directory(nats, results, tmp_path: Path) -> None:
    d = tmp_path / "NATS-tss-v1_0-3ffb9-simple"
    d.mkdir()
    nats.pickle_save({"meta_archs": ARCHS}, str(d / "meta.pickle"))
    for i, by_hp in results.items():
        nats.pickle_save(by_hp, str(d / f"{i:06d}.pickle"))
    _check_table(T.build_nats_bench_table(d))
    _check_table(T.build_nats_bench_table(d, hps=["12"]), hps=("12",))


def test_nb201_pth(nats, results, tmp_path: Path) -> None:
    import torch

    f = tmp_path / "NAS-Bench-201-v1_1-096897.pth"
    infos = {i: {"less": by_hp["12"], "full": by_hp["200"]} for i, by_hp in results.items()}
    torch.save({"meta_archs": ARCHS, "arch2infos": infos, "evaluated_indexes": [0, 1, 2]}, f)
    _check_table(T.build_nats_bench_table(f))


def test_not_a_nats_file(nats, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    f = tmp_path / "NATS-tss-v1_0-3ffb9.pickle.pbz2"
    f.write_bytes(b"BZh9 this is not bzip2")
    out = tmp_path / "t.parquet"
    assert T.main(["nats_bench", "--input", str(f), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {f}: not a NATS-Bench topology (tss) file or directory") and not out.exists()
    empty = tmp_path / "empty-simple"
    empty.mkdir()
    with pytest.raises(DataError, match=f"{empty}: not a NATS-Bench topology"):
        T.build_nats_bench_table(empty)
    with pytest.raises(DataError, match="input file does not exist"):
        T.build_nats_bench_table(tmp_path / "nope")
