"""data_prep.tables: the real NB201 build, the generic builder, validation and the CLI."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from scipy.stats import spearmanr

from data_prep import tables as T
from pipeline.errors import DataError
from pipeline.spaces import get_space

ARCH0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
# SOURCES.md: NASLib tuple (4,0,3,1,4,3) is this arch string (tuple edge order differs from the string's)
TUPLE_EXAMPLE = "(4, 0, 3, 1, 4, 3)"
TUPLE_ARCH = "|avg_pool_3x3~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_1x1~2|"
NB201_COLUMNS = ["index", "arch", "cifar10_test_200ep", "cifar10_valid_val_200ep", "cifar10_test_12ep",
                 "cifar10_valid_val_12ep", "flops", "params", "flops_computed", "params_computed", "iso_class"]


@pytest.fixture(scope="module")
def bench_dir(shared_data: Path) -> Path:
    d = shared_data / "nasbench201"
    if not (d / T.NB201_TEST_200EP).is_file():
        pytest.skip(f"NB201 benchmark files not found in {d}")
    return d


@pytest.fixture(scope="module")
def nb201(bench_dir: Path) -> pa.Table:
    return T.build_nb201_table(bench_dir)


@pytest.fixture(scope="module")
def rows(nb201: pa.Table) -> dict[str, list]:
    return nb201.to_pydict()


def _meta(table: pa.Table) -> dict:
    return json.loads(table.schema.metadata[T.META_KEY])


def _write_csv(path: Path, columns: dict[str, list]) -> Path:
    pacsv.write_csv(pa.table(columns), path)
    return path


# --------------------------------------------------------------------------- real NB201 build


def test_nb201_shape_and_columns(nb201: pa.Table, rows: dict) -> None:
    assert nb201.num_rows == T.NB201_SIZE
    assert nb201.column_names == NB201_COLUMNS
    assert nb201.schema.field("index").type == pa.int64()
    assert all(nb201.schema.field(c).type == pa.float64() for c in NB201_COLUMNS[2:10])
    assert rows["index"] == list(range(T.NB201_SIZE))
    assert rows["arch"][0] == ARCH0
    assert len(set(rows["arch"])) == T.NB201_SIZE
    for label in NB201_COLUMNS[2:6]:
        assert nb201[label].null_count == 0


def test_nb201_values(nb201: pa.Table, rows: dict) -> None:
    val = np.array(rows["cifar10_valid_val_200ep"])
    test = np.array(rows["cifar10_test_200ep"])
    assert val.max() == pytest.approx(91.57)
    assert test.max() == pytest.approx(94.3733, abs=1e-4)
    best = set(np.flatnonzero(np.isclose(test, test.max())).tolist())
    assert best == {6111, 13714}
    assert max(rows["cifar10_test_12ep"]) == pytest.approx(89.16)
    assert spearmanr(val, test).statistic == pytest.approx(0.98, abs=0.005)


def test_nb201_flops_params(nb201: pa.Table, rows: dict) -> None:
    assert nb201.num_rows - nb201["flops"].null_count == 9445
    assert nb201.num_rows - nb201["params"].null_count == 9445
    assert nb201["params_computed"].null_count == 0 and nb201["flops_computed"].null_count == 0
    params = np.array([np.nan if p is None else p for p in rows["params"]])
    known = ~np.isnan(params)
    # the file rounds params to 6 decimals
    np.testing.assert_allclose(np.array(rows["params_computed"])[known], params[known], atol=1e-6)


def test_nb201_naslib_tuple_mapping(rows: dict) -> None:
    assert T.ArchCache(get_space("nb201")).canon(TUPLE_EXAMPLE) == TUPLE_ARCH
    i = rows["arch"].index(TUPLE_ARCH)
    # first data row of the robustness file and of the flops/params file (both keyed by that tuple)
    assert rows["cifar10_valid_val_200ep"][i] == pytest.approx(84.99)
    assert rows["flops"][i] == pytest.approx(19.248832)
    assert rows["params"][i] == pytest.approx(0.129306)


def test_nb201_iso_class_matches_benchmark(bench_dir: Path, rows: dict) -> None:
    src = pacsv.read_csv(bench_dir / T.NB201_TEST_200EP)
    assert rows["iso_class"] == src["UniqueString"].to_pylist()
    assert len(set(rows["iso_class"])) == 6466


def test_nb201_metadata(nb201: pa.Table, bench_dir: Path) -> None:
    meta = _meta(nb201)
    assert meta["space"] == "nb201" and meta["format_version"] == 1
    assert meta["label_columns"] == NB201_COLUMNS[2:6]
    by_name = {Path(s["path"]).name: s for s in meta["sources"]}
    assert set(by_name) == {T.NB201_TEST_200EP, "nb201_cifar10_val_acc_robustness.csv", T.NB201_12EP, T.NB201_COST}
    assert by_name[T.NB201_COST]["columns"] == ["flops", "params"]
    assert by_name[T.NB201_12EP]["sha256"] == T.file_sha256(bench_dir / T.NB201_12EP)


# --------------------------------------------------------------------------- write / prepare


def test_write_round_trip(nb201: pa.Table, tmp_path: Path) -> None:
    out = T.write_table(nb201, tmp_path / "t" / "nb201.parquet")
    back = pq.read_table(out)
    assert back.equals(nb201)
    assert _meta(back) == _meta(nb201)
    assert [p.name for p in (tmp_path / "t").iterdir()] == ["nb201.parquet"]  # no temp file left


@pytest.fixture
def small_dir(bench_dir: Path, tmp_path: Path) -> Path:
    """A benchmark dir with only the 12-epoch file (fast to build; index from its `index` column)."""
    d = tmp_path / "bench"
    d.mkdir()
    shutil.copy(bench_dir / T.NB201_12EP, d)
    return d


def test_prepare_is_idempotent(small_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared" / "nb201.parquet"
    assert T.prepare_table("nb201", small_dir, out) == out
    first = out.stat()
    assert T.prepare("nb201", small_dir, out) == (out, True)
    again = out.stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    # a changed source file (new sha256) makes it rebuild
    f = small_dir / T.NB201_12EP
    f.write_text(f.read_text().replace("69.550000", "69.560000", 1))
    assert T.prepare("nb201", small_dir, out) == (out, False)
    table = pq.read_table(out)
    assert table["cifar10_test_12ep"][0].as_py() == pytest.approx(69.56)
    assert table.column_names == ["index", "arch", "cifar10_test_12ep", "cifar10_valid_val_12ep",
                                  "flops_computed", "params_computed", "iso_class"]
    assert T.prepare("nb201", small_dir, out, force=True) == (out, False)


def test_nb201_file_missing_a_row(small_dir: Path, tmp_path: Path) -> None:
    f = small_dir / T.NB201_12EP
    lines = f.read_text().splitlines(keepends=True)
    dropped = lines[6].split(",")[1]
    f.write_text("".join(lines[:6] + lines[7:]))
    out = tmp_path / "out.parquet"
    with pytest.raises(DataError) as e:
        T.prepare_table("nb201", small_dir, out)
    msg = str(e.value)
    assert T.NB201_12EP in msg and "15624" in msg and dropped in msg
    assert not out.exists()


def test_nb201_duplicate_row(small_dir: Path) -> None:
    f = small_dir / T.NB201_12EP
    lines = f.read_text().splitlines(keepends=True)
    dup = lines[1].split(",")[1]
    f.write_text("".join(lines[:6] + [lines[1]] + lines[7:]))
    with pytest.raises(DataError, match="duplicated") as e:
        T.build_nb201_table(small_dir)
    assert dup in str(e.value)


def test_nb201_bad_arch_names_file_and_row(small_dir: Path) -> None:
    f = small_dir / T.NB201_12EP
    lines = f.read_text().splitlines(keepends=True)
    lines[4] = lines[4].replace("~0|", "~0", 1)  # data row 3
    f.write_text("".join(lines))
    with pytest.raises(DataError) as e:
        T.build_nb201_table(small_dir)
    msg = str(e.value)
    assert T.NB201_12EP in msg and "row 3 (line 5)" in msg and "arch_str" in msg


def test_nb201_no_label_file(tmp_path: Path, bench_dir: Path) -> None:
    shutil.copy(bench_dir / T.NB201_COST, tmp_path)  # a cost file alone has no labels
    with pytest.raises(DataError) as e:
        T.build_nb201_table(tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg and T.NB201_TEST_200EP in msg and T.NB201_12EP in msg


# --------------------------------------------------------------------------- generic builder


@pytest.fixture(scope="module")
def generic_inputs(rows: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two files over the same 2,000 archs in different row orders: arch strings + index + test acc,
    and NASLib tuples + val acc (tuple column second, after a non-arch string column)."""
    d = tmp_path_factory.mktemp("generic")
    space = get_space("nb201")
    rng = np.random.default_rng(1)
    pick = rng.choice(T.NB201_SIZE, 2000, replace=False)
    inv_ops = {op: i for i, op in enumerate(("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3"))}
    order = ((1, 0), (2, 0), (3, 0), (2, 1), (3, 1), (3, 2))
    edges = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))

    def tuple_of(arch: str) -> str:
        ops = dict(zip(edges, space.parse(arch)))
        return str(tuple(inv_ops[ops[e]] for e in order))

    def files(tag: str, seed: int) -> tuple[Path, Path]:
        r = np.random.default_rng(seed)
        a_rows, b_rows = r.permutation(pick), r.permutation(pick)
        a = _write_csv(d / f"a_{tag}.csv", {
            "index": [int(i) for i in a_rows],
            "arch": [rows["arch"][i] for i in a_rows],
            "test_acc": [rows["cifar10_test_200ep"][i] for i in a_rows]})
        b = _write_csv(d / f"b_{tag}.csv", {
            "note": ["x"] * len(b_rows),
            "net": [tuple_of(rows["arch"][i]) for i in b_rows],
            "val_acc": [rows["cifar10_valid_val_200ep"][i] for i in b_rows]})
        return a, b

    return {"dir": d, "pick": pick, "one": files("one", 2), "two": files("two", 3)}


def _without_sources(table: pa.Table) -> pa.Table:
    meta = _meta(table)
    meta.pop("sources")
    return table.replace_schema_metadata({T.META_KEY: json.dumps(meta).encode()})


def test_generic_join_by_arch_ignores_row_order(generic_inputs: dict, rows: dict) -> None:
    one = T.build_generic_table(list(generic_inputs["one"]), "nb201", expected_rows=2000)
    two = T.build_generic_table(list(generic_inputs["two"]), get_space("nb201"))
    assert _without_sources(one).equals(_without_sources(two))
    assert one.column_names == ["index", "arch", "test_acc", "val_acc", "iso_class"]
    assert _meta(one)["label_columns"] == ["test_acc", "val_acc"]
    # the same values the NB201 builder joins for those archs
    idx = one["index"].to_pylist()
    assert idx == sorted(generic_inputs["pick"].tolist())
    assert one["arch"].to_pylist() == [rows["arch"][i] for i in idx]
    assert one["val_acc"].to_pylist() == [rows["cifar10_valid_val_200ep"][i] for i in idx]


def test_generic_parquet_input_and_explicit_columns(generic_inputs: dict, tmp_path: Path) -> None:
    a, b = generic_inputs["one"]
    b_parquet = tmp_path / "b.parquet"
    pq.write_table(pacsv.read_csv(b), b_parquet)
    t = T.build_generic_table([a, b_parquet], "nb201", arch_column=None, label_columns=["val_acc"])
    assert t.column_names == ["index", "arch", "val_acc", "iso_class"]
    t = T.build_generic_table([b], "nb201", arch_column="net")
    assert t["index"].to_pylist() == list(range(2000))  # no index column: row order


def test_generic_different_arch_sets(generic_inputs: dict, tmp_path: Path) -> None:
    a, b = generic_inputs["one"]
    short = pacsv.read_csv(b).slice(0, 1500)
    b_short = tmp_path / "b_short.csv"
    pacsv.write_csv(short, b_short)
    with pytest.raises(DataError) as e:
        T.build_generic_table([a, b_short], "nb201")
    assert f"{b_short} lacks 500 of them" in str(e.value) and f"{a} lacks" not in str(e.value)
    t = T.build_generic_table([a, b_short], "nb201", how="inner")
    assert t.num_rows == 1500
    with pytest.raises(DataError, match="expected 2000"):
        T.build_generic_table([a, b_short], "nb201", how="inner", expected_rows=2000)


def _one_file(tmp_path: Path, archs: list[str], accs: list[float | None], name: str = "in.csv") -> Path:
    return _write_csv(tmp_path / name, {"arch": archs, "acc": pa.array(accs, pa.float64())})


@pytest.fixture(scope="module")
def some_archs(rows: dict) -> list[str]:
    return rows["arch"][:10]


def test_generic_unparsable_arch(tmp_path: Path, some_archs: list[str]) -> None:
    archs = list(some_archs)
    archs[4] = "|nor_conv_3x3~0|+|nor_conv_3x3~0|"
    f = _one_file(tmp_path, archs, [50.0] * 10)
    with pytest.raises(DataError) as e:
        T.build_generic_table([f], "nb201")
    msg = str(e.value)
    assert str(f) in msg and "row 4" in msg and archs[4] in msg


def test_generic_unknown_op(tmp_path: Path, some_archs: list[str]) -> None:
    archs = list(some_archs)
    archs[7] = archs[7].replace("nor_conv_1x1", "nor_conv_5x5").replace("avg_pool_3x3", "nor_conv_5x5")
    assert "nor_conv_5x5" in archs[7]
    f = _one_file(tmp_path, archs, [50.0] * 10)
    with pytest.raises(DataError) as e:
        T.build_generic_table([f], "nb201")
    msg = str(e.value)
    assert str(f) in msg and "row 7" in msg and "unknown op 'nor_conv_5x5'" in msg


def test_generic_no_arch_column(tmp_path: Path) -> None:
    f = _write_csv(tmp_path / "x.csv", {"name": ["a", "b"], "acc": [1.0, 2.0]})
    with pytest.raises(DataError, match="no column holds nb201 architectures"):
        T.build_generic_table([f], "nb201")
    with pytest.raises(DataError, match="arch column 'arch' not found; columns: name, acc"):
        T.build_generic_table([f], "nb201", arch_column="arch")


def test_generic_missing_label_column(tmp_path: Path, some_archs: list[str]) -> None:
    f = _one_file(tmp_path, some_archs, [50.0] * 10)
    with pytest.raises(DataError) as e:
        T.build_generic_table([f], "nb201", label_columns=["val_acc"])
    assert "label column 'val_acc' not found" in str(e.value) and "available numeric columns: acc" in str(e.value)


def test_generic_nan_label(tmp_path: Path, some_archs: list[str]) -> None:
    accs = [50.0] * 10
    accs[2] = accs[5] = None  # empty CSV cells
    f = _one_file(tmp_path, some_archs, accs)
    with pytest.raises(DataError) as e:
        T.build_generic_table([f], "nb201")
    msg = str(e.value)
    assert "'acc'" in msg and "2 missing" in msg and some_archs[2] in msg


def test_generic_out_of_range_label(tmp_path: Path, some_archs: list[str]) -> None:
    accs = [50.0] * 10
    accs[3] = 101.5
    f = _one_file(tmp_path, some_archs, accs)
    with pytest.raises(DataError) as e:
        T.build_generic_table([f], "nb201")
    msg = str(e.value)
    assert "'acc'" in msg and "1 values outside [0, 100]" in msg and some_archs[3] in msg
    # labels that are not percentages: the range check can be widened or skipped
    assert T.build_generic_table([f], "nb201", label_range=None).num_rows == 10


def test_generic_duplicate_arch(tmp_path: Path, some_archs: list[str]) -> None:
    archs = list(some_archs)
    archs[6] = archs[1]
    f = _one_file(tmp_path, archs, [50.0] * 10)
    with pytest.raises(DataError) as e:
        T.build_generic_table([f], "nb201")
    msg = str(e.value)
    assert str(f) in msg and archs[1] in msg and "rows 1, 6" in msg


def test_generic_column_collision(tmp_path: Path, some_archs: list[str]) -> None:
    a = _one_file(tmp_path, some_archs, [50.0] * 10, "a.csv")
    b = _one_file(tmp_path, some_archs[::-1], [60.0] * 10, "b.csv")
    with pytest.raises(DataError) as e:
        T.build_generic_table([a, b], "nb201")
    assert "'acc'" in str(e.value) and str(a) in str(e.value) and str(b) in str(e.value)


def test_validate_labels_direct(nb201: pa.Table) -> None:
    T.validate_labels(nb201, ["cifar10_test_200ep"])
    with pytest.raises(DataError, match="outside \\[0, 50\\]"):
        T.validate_labels(nb201, ["cifar10_test_200ep"], label_range=(0, 50))


# --------------------------------------------------------------------------- CLI


def test_cli_generic_and_errors(tmp_path: Path, some_archs: list[str], capsys: pytest.CaptureFixture) -> None:
    good = _one_file(tmp_path, some_archs, [50.0 + i for i in range(10)], "good.csv")
    out = tmp_path / "out" / "g.parquet"
    assert T.main(["generic", "--space", "nb201", "--input", str(good), "--labels", "acc", "--out", str(out)]) == 0
    assert pq.read_table(out)["acc"].to_pylist() == [50.0 + i for i in range(10)]

    bad = _one_file(tmp_path, some_archs, [50.0] * 9 + [150.0], "bad.csv")
    out2 = tmp_path / "out" / "bad.parquet"
    capsys.readouterr()
    assert T.main(["generic", "--space", "nb201", "--input", str(bad), "--out", str(out2)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "'acc'" in err
    assert not out2.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["g.parquet"]  # no temp files

    out3 = tmp_path / "nb.parquet"
    assert T.main(["nb201", "--benchmark-dir", str(tmp_path / "nope"), "--out", str(out3)]) == 2
    assert "does not exist" in capsys.readouterr().err and not out3.exists()


# --------------------------------------------------------------------------- registry, default tables


def test_formats_registry_and_default_tables() -> None:
    assert T.FORMATS.names() == ["generic", "naslib", "nats_bench", "nb101_tfrecord", "nb101_vis", "nb201"]
    for space, default in T.DEFAULT_TABLES.items():
        assert default.format in T.FORMATS, space
    assert {s: d.format for s, d in T.DEFAULT_TABLES.items()} == {"nb201": "nb201", "nb101": "nb101_vis",
                                                                  "darts": "naslib"}


def test_prepare_unknown_space(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(DataError, match="no default benchmark table for space 'mobilenet' \\(known: nb201, nb101, "
                                        "darts\\); use `python -m data_prep.tables generic --space mobilenet"):
        T.prepare_table("mobilenet", tmp_path, tmp_path / "t.parquet")
    assert T.main(["prepare", "--space", "darts", "--benchmark-dir", str(tmp_path), "--out",
                   str(tmp_path / "t.parquet")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'naslib_zc_nasbench301_725.json'}: benchmark file does not exist" in err
    assert not (tmp_path / "t.parquet").exists()


def test_prepare_cli_nb201(small_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "nb201.parquet"
    argv = ["prepare", "--space", "nb201", "--benchmark-dir", str(small_dir), "--out", str(out)]
    assert T.main(argv) == 0 and capsys.readouterr().out.startswith(f"wrote {out}: 15625 rows")
    assert T.main(argv) == 0 and capsys.readouterr().out.startswith(f"up to date, skipped {out}")
    # a table of the same sources by another builder is not "up to date" for this one
    other = T.build_generic_table([small_dir / T.NB201_12EP], "nb201", label_columns=["cifar10_test_12ep"])
    T.write_table(other, out)
    assert T.prepare("nb201", small_dir, out) == (out, False)
    assert T.read_meta(out)["builder"] == "nb201"
