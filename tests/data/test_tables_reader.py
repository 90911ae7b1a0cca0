"""pipeline.data.tables: loading prepared tables and the reproducible train split."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.tables import prepare_table
from pipeline.data.tables import ArchTable, load_table, split_train
from pipeline.errors import DataError

ARCH0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"


@pytest.fixture(scope="module")
def table_path(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    bench = shared_data / "nasbench201"
    if not (bench / "nb201_200ep_test_acc.csv").is_file():
        pytest.skip(f"NB201 benchmark files not found in {bench}")
    return prepare_table("nb201", bench, tmp_path_factory.mktemp("tables") / "nb201.parquet")


@pytest.fixture(scope="module")
def table(table_path: Path) -> ArchTable:
    return load_table(table_path)


def test_load_real_table(table: ArchTable, table_path: Path) -> None:
    assert len(table) == 15625 and table.path == table_path
    assert table.archs[0] == ARCH0
    assert table.columns["index"].dtype == np.int64
    assert (table.columns["index"] == np.arange(15625)).all()
    test = table.label("cifar10_test_200ep")
    assert test.dtype == np.float64 and test.max() == pytest.approx(94.3733, abs=1e-4)
    assert table.label("cifar10_valid_val_200ep").max() == pytest.approx(91.57)
    assert np.isnan(table.label("flops")).sum() == 15625 - 9445
    assert table.label_columns == ["cifar10_test_200ep", "cifar10_valid_val_200ep",
                                   "cifar10_test_12ep", "cifar10_valid_val_12ep"]
    assert table.meta["space"] == "nb201" and table.meta["format_version"] == 1
    assert table.columns["iso_class"][0] == "(0)@avg_pool_3x3+(0)@avg_pool_3x3+(0)@nor_conv_1x1+(0)@nor_conv_1x1"
    assert table.rows([table.archs[5], ARCH0]).tolist() == [5, 0]


def test_unknown_label_lists_available(table: ArchTable, table_path: Path) -> None:
    with pytest.raises(DataError) as e:
        table.label("cifar100_test_200ep")
    msg = str(e.value)
    assert msg.startswith(f"column 'cifar100_test_200ep' not in table {table_path}; available label columns: ")
    assert "cifar10_test_200ep" in msg and "iso_class" not in msg
    with pytest.raises(DataError, match="column 'iso_class' not in table"):
        table.label("iso_class")  # a string column is no label
    with pytest.raises(DataError, match="is not in table"):
        table.rows(["|none~0|+|none~0|none~1|+|none~0|none~1|nope~2|"])


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    missing = tmp_path / "prepared" / "nb201.parquet"
    with pytest.raises(DataError) as e:
        load_table(missing)
    assert str(missing) in str(e.value) and "python -m data_prep.tables nb201" in str(e.value)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="not a readable Parquet table"):
        load_table(bad)
    no_arch = tmp_path / "no_arch.parquet"
    pq.write_table(pa.table({"x": [1.0]}), no_arch)
    with pytest.raises(DataError, match="no 'arch' column"):
        load_table(no_arch)


def test_plain_parquet_without_metadata(tmp_path: Path) -> None:
    f = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"index": [0, 1], "arch": ["a", "b"], "acc": [1.0, None]}), f)
    t = load_table(f)
    assert t.meta == {} and t.label_columns == ["acc"]
    assert np.isnan(t.label("acc")[1])


def test_split_train_reproducible() -> None:
    # pinned: numpy's PCG64 stream is the same on every machine
    assert split_train(10, 5, seed=0).tolist() == [4, 6, 2, 7, 3]
    a = split_train(15625, 1000, seed=3)
    assert np.array_equal(a, split_train(15625, 1000, seed=3))
    assert not np.array_equal(a, split_train(15625, 1000, seed=4))
    assert len(np.unique(a)) == 1000 and a.min() >= 0 and a.max() < 15625
    assert a.dtype == np.int64


def test_split_train_exclude_and_errors() -> None:
    excluded = np.arange(0, 15625, 2)
    a = split_train(15625, 7000, seed=0, exclude=excluded)
    assert not np.isin(a, excluded).any()
    with pytest.raises(DataError, match="^data.num_train=20000 but the table holds 15625 architectures$"):
        split_train(15625, 20000, seed=0)
    with pytest.raises(DataError, match="7813 of them excluded"):
        split_train(15625, 7813, seed=0, exclude=excluded)
    with pytest.raises(DataError, match="excluded row indices"):
        split_train(10, 2, seed=0, exclude=[10])


def test_reader_and_writers_share_the_schema(tmp_path: Path) -> None:
    from data_prep.tables import schema, write_table
    from data_prep.tables.build import finish_table
    from data_prep.tables.parts import ArchCache
    from pipeline.data import tables as reader
    from pipeline.spaces import get_space

    assert (reader.META_KEY, reader.FORMAT_VERSION) == (schema.META_KEY, schema.FORMAT_VERSION)
    cache = ArchCache(get_space("nb201"))
    order = [cache.canon(ARCH0)]
    t = finish_table(cache, order, np.array([7]), {"acc": pa.array([50.0])}, "test", ["acc"], [])
    f = write_table(t, tmp_path / "t.parquet")
    loaded = load_table(f)
    assert loaded.meta["format_version"] == schema.FORMAT_VERSION and loaded.label_columns == ["acc"]
    newer = t.replace_schema_metadata(schema.encode_meta({**loaded.meta, "format_version": schema.FORMAT_VERSION + 1}))
    pq.write_table(newer, f)
    with pytest.raises(DataError, match="is newer than this reader"):
        load_table(f)
