"""data_prep.tables naslib: NASLib zero-cost JSON files (both layouts) -> the core schema."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from data_prep import tables as T
from data_prep.tables.schema import META_KEY
from pipeline.data.tables import load_table
from pipeline.errors import DataError
from pipeline.spaces import get_space

# SOURCES.md: NASLib tuple (4,0,3,1,4,3) is this arch string (the tuple's edge order differs from the string's)
TUPLE_A = "(4, 0, 3, 1, 4, 3)"
ARCH_A = "|avg_pool_3x3~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_1x1~2|"
TUPLE_B, TUPLE_C, TUPLE_D = "(2, 2, 2, 2, 2, 2)", "(0, 1, 3, 4, 2, 0)", "(3, 3, 0, 1, 1, 4)"


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def _nested(values: dict[str, dict[str, dict]], bench: str = "nasbench201") -> dict:
    return {bench: values}


def _record(acc: float, **extra) -> dict:
    return {"flops": 10.0 + acc / 10, "params": 0.1 + acc / 1000, "snip": acc * 2, "val_accuracy": acc, **extra}


def _meta(path: Path) -> dict:
    return json.loads(pq.read_schema(path).metadata[META_KEY])


# --------------------------------------------------------------------------- layout {benchmark: {dataset: ...}}


def test_nested_layout_nb201(tmp_path: Path) -> None:
    f = _write(tmp_path / "zc_nasbench201.json", _nested({"cifar10": {
        TUPLE_A: _record(88.5), TUPLE_B: _record(93.0, grasp=None), TUPLE_C: _record(70.25)}}))
    t = T.build_naslib_table(f, "nb201")
    assert t.column_names == ["index", "arch", "val_accuracy", "flops", "params", "snip", "grasp", "iso_class"]
    rows = t.to_pydict()
    space = get_space("nb201")
    assert rows["arch"][0] == ARCH_A
    assert rows["arch"][1] == space.to_str(space.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
                                                       "+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"))
    assert rows["index"] == [0, 1, 2]  # no idx: file order
    assert rows["val_accuracy"] == [88.5, 93.0, 70.25]
    assert rows["snip"] == [177.0, 186.0, 140.5]
    assert rows["grasp"] == [None, None, None]  # null where the file has no number
    assert rows["iso_class"] == [space.isomorphism_class(space.parse(a)) for a in rows["arch"]]
    meta = json.loads(t.schema.metadata[META_KEY])
    assert meta["builder"] == "naslib" and meta["space"] == "nb201" and meta["dataset"] == "cifar10"
    assert meta["layout"] == "benchmark/dataset/key" and meta["label_columns"] == ["val_accuracy"]
    assert meta["proxy_columns"] == ["flops", "params", "snip", "grasp"] and "label_scale" not in meta
    assert meta["sources"][0]["sha256"] == T.file_sha256(f)


def test_dataset_choice(tmp_path: Path) -> None:
    data = {"cifar100": {TUPLE_A: _record(60.0)}, "cifar10": {TUPLE_A: _record(90.0)},
            "ImageNet16-120": {TUPLE_A: _record(40.0)}}
    f = _write(tmp_path / "zc.json", _nested(data))
    assert T.build_naslib_table(f, "nb201")["val_accuracy"].to_pylist() == [90.0]  # default: cifar10
    assert T.build_naslib_table(f, "nb201", dataset="ImageNet16-120")["val_accuracy"].to_pylist() == [40.0]
    with pytest.raises(DataError, match="no dataset 'svhn'; datasets: cifar100, cifar10, ImageNet16-120"):
        T.build_naslib_table(f, "nb201", dataset="svhn")
    g = _write(tmp_path / "two.json", _nested({"cifar100": data["cifar100"], "x": data["cifar10"]}))
    with pytest.raises(DataError, match="several datasets \\(cifar100, x\\); choose one with --dataset"):
        T.build_naslib_table(g, "nb201")


def test_benchmark_of_another_space(tmp_path: Path) -> None:
    f = _write(tmp_path / "zc_nasbench101.json", _nested({"cifar10": {TUPLE_A: _record(90.0)}}, "nasbench101"))
    with pytest.raises(DataError) as e:
        T.build_naslib_table(f, "nb201")
    assert str(f) in str(e.value) and "no 'nasbench201' part for space 'nb201'" in str(e.value)
    assert "'nasbench101'" in str(e.value)


# --------------------------------------------------------------------------- layout {dataset: {key: {idx, arch, ...}}}


def _flat_record(idx, key: str, acc: float, **extra) -> dict:
    return {"idx": idx, "arch": key, "val_accuracy": acc, "flops": {"score": 20.0, "time": 0.5},
            "synflow": {"score": acc / 10, "time": 1.5}, **extra}


def test_flat_layout_idx_and_scores(tmp_path: Path) -> None:
    f = _write(tmp_path / "zc_725.json", {"cifar10": {
        TUPLE_B: _flat_record("12", TUPLE_B, 93.5), TUPLE_A: _flat_record("3", TUPLE_A, 88.0, note="x"),
        TUPLE_C: _flat_record(7, TUPLE_C, 71.0)}})
    t = T.build_naslib_table(f, "nb201")
    assert t.column_names == ["index", "arch", "val_accuracy", "flops", "flops_time", "synflow", "synflow_time",
                              "iso_class"]
    rows = t.to_pydict()
    assert rows["index"] == [3, 7, 12]  # `idx` (strings or ints) -> index, rows sorted by it
    assert rows["arch"][0] == ARCH_A
    assert rows["val_accuracy"] == [88.0, 71.0, 93.5]
    assert rows["synflow"] == pytest.approx([8.8, 7.1, 9.35]) and rows["synflow_time"] == [1.5] * 3
    meta = json.loads(t.schema.metadata[META_KEY])
    assert meta["layout"] == "dataset/key" and meta["ignored_fields"] == ["note"]


def test_fraction_labels_are_scaled(tmp_path: Path) -> None:
    f = _write(tmp_path / "zc.json", {"cifar10": {TUPLE_A: _flat_record(0, TUPLE_A, 0.885),
                                                  TUPLE_B: _flat_record(1, TUPLE_B, 0.93)}})
    t = T.build_naslib_table(f, "nb201")
    assert t["val_accuracy"].to_pylist() == pytest.approx([88.5, 93.0])
    assert json.loads(t.schema.metadata[META_KEY])["label_scale"] == {"val_accuracy": 100.0}


def test_nb101_and_darts_keys(tmp_path: Path) -> None:
    # NB101: 49 adjacency entries + 7 op ids of [input, output, maxpool3x3, conv1x1, conv3x3]; NASLib pads
    # a 4-vertex cell with edge-less conv3x3 vertices before the output
    adj = np.zeros((7, 7), dtype=int)
    adj[0, 1] = adj[1, 2] = adj[2, 6] = adj[0, 6] = 1
    key = str(tuple(adj.flatten().tolist()) + (0, 4, 2, 4, 4, 4, 1))
    f = _write(tmp_path / "zc_nasbench101.json", _nested({"cifar10": {key: _record(91.0)}}, "nasbench101"))
    nb101 = get_space("nb101")
    t = T.build_naslib_table(f, "nb101")
    assert t["arch"].to_pylist() == [nb101.to_str(nb101.parse("conv3x3,maxpool3x3|0>1,1>2,2>3,0>3"))]
    # DARTS compact genotype, the 725-file layout
    genotype = ("[[(0, 0), (1, 5), (1, 1), (0, 1), (1, 3), (0, 3), (1, 3), (3, 2)], "
                "[(1, 0), (0, 2), (1, 3), (0, 3), (3, 0), (0, 1), (2, 0), (3, 6)]]")
    g = _write(tmp_path / "zc_nasbench301.json", {"cifar10": {genotype: _flat_record("534", genotype, 93.3)}})
    darts = get_space("darts")
    t = T.build_naslib_table(g, "darts")
    assert t["arch"].to_pylist() == [darts.to_str(darts.parse(genotype))] and t["index"].to_pylist() == [534]


# --------------------------------------------------------------------------- the shared files


def test_shared_nb201_file_matches_the_nb201_table(shared_data: Path) -> None:
    f = shared_data / "nasbench201" / "naslib_zc_nasbench201_491.json"
    val = shared_data / "nasbench201" / "nb201_cifar10_val_acc_robustness.csv"
    if not (f.is_file() and val.is_file()):
        pytest.skip(f"{f} / {val} not found")
    t = T.build_naslib_table(f, "nb201")
    assert t.num_rows == 491 and max(t["val_accuracy"].to_pylist()) == pytest.approx(91.09)
    # SOURCES.md: its val_accuracy equals val_accs of the robustness file for the same archs
    ref = T.build_generic_table([val], "nb201", arch_column="net", label_columns=["val_accs"])
    by_arch = dict(zip(ref["arch"].to_pylist(), ref["val_accs"].to_pylist()))
    assert [by_arch[a] for a in t["arch"].to_pylist()] == t["val_accuracy"].to_pylist()
    assert t.column_names[2:-1] == ["val_accuracy", "flops", "params", "snip", "jacov", "grad_norm", "plain",
                                    "epe_nas", "fisher", "grasp", "l2_norm", "synflow"]


def test_shared_darts_file_is_the_default_darts_table(shared_data: Path, tmp_path: Path) -> None:
    d = shared_data / "nasbench301"
    if not (d / "naslib_zc_nasbench301_725.json").is_file():
        pytest.skip(f"NB301 file not found in {d}")
    out = T.prepare_table("darts", d, tmp_path / "darts.parquet")
    table = load_table(out)
    assert len(table) == 725 and table.meta["builder"] == "naslib" and table.meta["space"] == "darts"
    y = table.label("val_accuracy")
    assert 91.2 < y.min() < y.max() < 94.5
    index = table.columns["index"]
    assert len(np.unique(index)) == 725 and (np.diff(index) > 0).all()
    assert np.isfinite(table.label("synflow")).all() and np.isfinite(table.label("synflow_time")).all()
    assert T.prepare("darts", d, out) == (out, True)  # up to date: kept


# --------------------------------------------------------------------------- bad input


def _expect(tmp_path: Path, obj, *fragments: str, space: str = "nb201", raw: str | None = None) -> None:
    f = tmp_path / "bad.json"
    f.write_text(raw if raw is not None else json.dumps(obj))
    with pytest.raises(DataError) as e:
        T.build_naslib_table(f, space)
    for frag in (str(f), *fragments):
        assert frag in str(e.value), (frag, str(e.value))


def test_key_that_does_not_parse(tmp_path: Path) -> None:
    data = {"cifar10": {TUPLE_A: _record(90.0), "(4, 0, 3, 1, 4, 9)": _record(80.0)}}
    _expect(tmp_path, _nested(data), "key '(4, 0, 3, 1, 4, 9)'", "not a nb201 architecture", "need 6 op ids in 0..4")


def test_missing_and_nan_labels(tmp_path: Path) -> None:
    no_label = {TUPLE_A: _record(90.0), TUPLE_B: {"flops": 1.0, "snip": 2.0}}
    _expect(tmp_path, _nested({"cifar10": no_label}), f"key {TUPLE_B!r}", "no 'val_accuracy' value", "flops, snip")
    nan = {TUPLE_A: _record(90.0), TUPLE_C: _record(math.nan)}
    _expect(tmp_path, None, f"key {TUPLE_C!r}", "label 'val_accuracy'", "expected a finite number",
            raw=json.dumps(_nested({"cifar10": nan})))  # json writes NaN, as Python's json reads it
    text = {TUPLE_A: _record(90.0), TUPLE_D: _record(90.0, val_accuracy="high")}
    _expect(tmp_path, _nested({"cifar10": text}), f"key {TUPLE_D!r}", "'val_accuracy' is a string")
    high = {TUPLE_A: _record(90.0), TUPLE_D: _record(190.0)}
    _expect(tmp_path, _nested({"cifar10": high}), "values outside [0, 100]")


def test_wrong_shapes(tmp_path: Path) -> None:
    _expect(tmp_path, [1, 2], "the file is a list", "expected {dataset: {arch key")
    _expect(tmp_path, {"cifar10": [TUPLE_A]}, "'cifar10' holds a list")
    _expect(tmp_path, {}, "the file is empty")
    _expect(tmp_path, _nested({"cifar10": {TUPLE_A: [90.0]}}), f"key {TUPLE_A!r}", "expected an object of values")
    _expect(tmp_path, None, "not valid JSON", raw='{"cifar10": {')
    _expect(tmp_path, {"cifar10": {TUPLE_A: _flat_record(1, TUPLE_B, 90.0)}}, "another architecture than the key")
    _expect(tmp_path, {"cifar10": {TUPLE_A: _flat_record(1, TUPLE_A, 90.0), TUPLE_B: _record(91.0)}},
            f"key {TUPLE_B!r} has no 'idx'")
    _expect(tmp_path, {"cifar10": {TUPLE_A: _flat_record(1, TUPLE_A, 90.0), TUPLE_B: _flat_record(1, TUPLE_B, 9.0)}},
            "'idx' repeats 1")
    _expect(tmp_path, {"cifar10": {TUPLE_A: _flat_record(1, TUPLE_A, 90.0, snip={"score": "big"})}},
            "field 'snip' is a string")


def test_duplicate_architecture_names_both_keys(tmp_path: Path) -> None:
    # two spellings of one cell (spaces around the commas differ, the tuple is the same)
    _expect(tmp_path, _nested({"cifar10": {TUPLE_A: _record(90.0), "(4,0,3,1,4,3)": _record(91.0)}}),
            ARCH_A, f"keys {TUPLE_A!r}, '(4,0,3,1,4,3)'")


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good = _write(tmp_path / "zc.json", _nested({"cifar10": {TUPLE_A: _record(88.5), TUPLE_B: _record(93.0)}}))
    out = tmp_path / "out" / "t.parquet"
    argv = ["naslib", "--space", "nb201", "--input", str(good), "--out", str(out)]
    assert T.main(argv) == 0
    assert "wrote" in capsys.readouterr().out and pq.read_table(out)["val_accuracy"].to_pylist() == [88.5, 93.0]
    assert _meta(out)["dataset"] == "cifar10"

    bad = _write(tmp_path / "bad.json", _nested({"cifar10": {TUPLE_A: _record(88.5), "(9,)": _record(93.0)}}))
    out2 = tmp_path / "out" / "bad.parquet"
    assert T.main(["naslib", "--space", "nb201", "--input", str(bad), "--out", str(out2)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(bad) in err and "'(9,)'" in err and err.count("\n") == 1
    assert not out2.exists() and sorted(p.name for p in out.parent.iterdir()) == ["t.parquet"]
    assert T.main(["naslib", "--space", "nb999", "--input", str(good), "--out", str(out2)]) == 2
    assert "unknown search space 'nb999'" in capsys.readouterr().err and not out2.exists()
