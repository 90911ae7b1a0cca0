"""data_prep.tables nb101_vis and nb101_tfrecord: NAS-Bench-101 files -> the core schema.

The tfrecord files are written here the way TensorFlow frames records (length, masked crc32c, data,
masked crc32c; crc computed bit by bit below, independently of the reader's), with nasbench's record
payload and `nasbench.ModelMetrics` messages serialized by the protobuf library from a descriptor of
nasbench/lib/model_metrics.proto, so the reader's own wire decoding is checked against protobuf's encoder.
"""
from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from data_prep import tables as T
from data_prep.tables import tfrecord
from data_prep.tables.nb101_tfrecord import decode_model_metrics
from data_prep.tables.schema import META_KEY
from pipeline.data.tables import load_table
from pipeline.errors import DataError
from pipeline.spaces import get_space

VIS_NAME = "nasbench_vis_nb101_1000.json"
ID = {"input": -1, "output": -2, "conv3x3-bn-relu": 0, "conv1x1-bn-relu": 1, "maxpool3x3": 2}

# (canonical string, ops, edges) of three cells; the vis file pads them to 7 vertices
CELLS = [
    ("conv3x3,conv1x1,maxpool3x3|0>1,0>2,1>3,2>3,3>4",
     ["input", "conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3", "output"],
     [(0, 1), (0, 2), (1, 3), (2, 3), (3, 4)]),
    ("conv3x3|0>1,1>2", ["input", "conv3x3-bn-relu", "output"], [(0, 1), (1, 2)]),
    ("maxpool3x3,conv3x3,conv3x3,conv1x1,conv3x3|0>1,0>2,1>3,2>3,3>4,4>5,0>6,5>6",
     ["input", "maxpool3x3", "conv3x3-bn-relu", "conv3x3-bn-relu", "conv1x1-bn-relu", "conv3x3-bn-relu", "output"],
     [(0, 1), (0, 2), (1, 3), (2, 3), (3, 4), (4, 5), (0, 6), (5, 6)]),
]


@pytest.fixture(scope="module")
def space():
    return get_space("nb101")


def _matrix(n: int, edges) -> list[list[int]]:
    m = [[0] * n for _ in range(n)]
    for s, d in edges:
        m[s][d] = 1
    return m


def _hash(space, text: str) -> str:
    return space.isomorphism_class(space.parse(text))


# --------------------------------------------------------------------------- nasbench-vis JSON


def _vis_file(path: Path, space, accs=None, **override) -> Path:
    """CELLS in the nasbench-vis layout: parallel lists, ops as ids, padded to 7 with -3 vertices
    (the second cell also gets one padding vertex in the middle)."""
    data = {f"{e}_final_validation_accuracy": [] for e in (4, 12, 36, 108)}
    data.update(final_training_time=[], trainable_parameters=[], operations=[], adjacency=[], key=[], embedding=[])
    for i, (text, ops, edges) in enumerate(CELLS):
        ids = [ID[o] for o in ops]
        if i == 1:  # input, padding, conv3x3, output: renumber the edges around the padding vertex
            ids = [ids[0], -3, ids[1], ids[2]]
            edges = [(0 if s == 0 else s + 1, d + 1) for s, d in edges]
        ids += [-3] * (7 - len(ids))
        data["operations"].append(ids)
        data["adjacency"].append([[float(x) for x in row] for row in _matrix(7, edges)])
        data["key"].append(_hash(space, text))
        for e in (4, 12, 36, 108):
            data[f"{e}_final_validation_accuracy"].append(0.5 + e / 1000 + i / 100)
        data["final_training_time"].append(1000.0 + i)
        data["trainable_parameters"].append(1_000_000 * (i + 1) + 5)
        data["embedding"].append([0.0, 1.0])
    if accs is not None:
        data["108_final_validation_accuracy"] = accs
    data.update(override)
    path.write_text(json.dumps(data))
    return path


def test_vis_subset(tmp_path: Path, space) -> None:
    f = _vis_file(tmp_path / VIS_NAME, space)
    t = T.build_nb101_vis_table(f)
    assert t.column_names == ["index", "arch", "cifar10_valid_val_4ep", "cifar10_valid_val_12ep",
                              "cifar10_valid_val_36ep", "cifar10_valid_val_108ep", "params", "training_time_s",
                              "nb101_hash", "iso_class"]
    rows = t.to_pydict()
    assert rows["arch"] == [space.to_str(space.parse(text)) for text, _, _ in CELLS]
    assert rows["index"] == [0, 1, 2]
    assert rows["cifar10_valid_val_108ep"] == pytest.approx([60.8, 61.8, 62.8])  # fractions -> percent
    assert rows["cifar10_valid_val_4ep"] == pytest.approx([50.4, 51.4, 52.4])
    assert rows["params"] == pytest.approx([1.000005, 2.000005, 3.000005])
    assert rows["training_time_s"] == [1000.0, 1001.0, 1002.0]
    assert rows["iso_class"] == rows["nb101_hash"]  # the space's hash is the benchmark's module hash
    meta = json.loads(t.schema.metadata[META_KEY])
    assert meta["space"] == "nb101" and meta["builder"] == "nb101_vis"
    assert meta["label_columns"] == t.column_names[2:6]
    assert meta["label_scale"] == {c: 100.0 for c in t.column_names[2:6]}


def test_vis_default_table_and_cli(tmp_path: Path, space, capsys: pytest.CaptureFixture) -> None:
    d = tmp_path / "nasbench101"
    d.mkdir()
    _vis_file(d / VIS_NAME, space)
    out = T.prepare_table("nb101", d, tmp_path / "nb101.parquet")
    assert load_table(out).label("cifar10_valid_val_108ep") == pytest.approx([60.8, 61.8, 62.8])
    assert T.prepare("nb101", d, out) == (out, True)
    out2 = tmp_path / "cli.parquet"
    assert T.main(["nb101_vis", "--input", str(d / VIS_NAME), "--out", str(out2)]) == 0
    assert pq.read_table(out2).equals(pq.read_table(out))
    assert T.main(["prepare", "--space", "nb101", "--benchmark-dir", str(tmp_path), "--out", str(out2)]) == 2
    assert f"{tmp_path / VIS_NAME}: benchmark file does not exist" in capsys.readouterr().err


def test_shared_vis_file(shared_data: Path, tmp_path: Path) -> None:
    d = shared_data / "nasbench101"
    if not (d / VIS_NAME).is_file():
        pytest.skip(f"{d / VIS_NAME} not found")
    table = load_table(T.prepare_table("nb101", d, tmp_path / "nb101.parquet"))
    assert len(table) == 1000 and len(set(table.archs)) == 1000
    assert list(table.columns["iso_class"]) == list(table.columns["nb101_hash"])
    y = table.label("cifar10_valid_val_108ep")
    assert y.max() == pytest.approx(94.67, abs=0.005)
    row = list(table.columns["nb101_hash"]).index("00005c142e6f48ac74fdcf73e3439874")
    # SOURCES.md: that cell has 8,555,530 parameters and validation accuracy 0.9305
    assert table.label("params")[row] == pytest.approx(8.55553)
    assert y[row] == pytest.approx(93.05, abs=0.005)


@pytest.mark.parametrize("override, fragments", [
    ({"operations": "bad"}, ["the lists must be parallel", "operations a string"]),
    ({"key": ["a", "b"]}, ["the lists must be parallel", "key 2", "adjacency 3"]),
    ({"trainable_parameters": None}, ["the lists must be parallel", "trainable_parameters null"]),
])
def test_vis_wrong_shape(tmp_path: Path, space, override, fragments) -> None:
    f = _vis_file(tmp_path / VIS_NAME, space, **override)
    with pytest.raises(DataError) as e:
        T.build_nb101_vis_table(f)
    for frag in (str(f), *fragments):
        assert frag in str(e.value), str(e.value)


def test_vis_bad_rows(tmp_path: Path, space) -> None:
    f = tmp_path / VIS_NAME
    data = json.loads(_vis_file(f, space).read_text())
    data.pop("adjacency")
    f.write_text(json.dumps(data))
    with pytest.raises(DataError, match="missing list\\(s\\) adjacency"):
        T.build_nb101_vis_table(f)
    data = json.loads(_vis_file(f, space).read_text())
    data["adjacency"][1][4][6] = 1.0  # an edge from a padding vertex
    f.write_text(json.dumps(data))
    with pytest.raises(DataError, match=f"row 1 \\(hash '{data['key'][1]}'\\): padding vertex 4 has edges"):
        T.build_nb101_vis_table(f)
    data = json.loads(_vis_file(f, space).read_text())
    data["operations"][2][3] = 7
    f.write_text(json.dumps(data))
    with pytest.raises(DataError, match="row 2 .*unknown op id 7"):
        T.build_nb101_vis_table(f)
    data = json.loads(_vis_file(f, space).read_text())
    data["adjacency"][0][0][4] = 1.0  # the input feeds the output directly: fine; now a cycle 4 -> 1
    data["adjacency"][0][4][1] = 1.0
    f.write_text(json.dumps(data))
    with pytest.raises(DataError) as e:
        T.build_nb101_vis_table(f)
    assert f"{f}: row 0 (hash '{data['key'][0]}'): not a nb101 cell" in str(e.value)


def test_vis_missing_and_nan_labels(tmp_path: Path, space) -> None:
    f = _vis_file(tmp_path / VIS_NAME, space, accs=[0.9, None, 0.8])
    with pytest.raises(DataError) as e:
        T.build_nb101_vis_table(f)
    msg = str(e.value)
    assert str(f) in msg and "'cifar10_valid_val_108ep': 1 missing" in msg and CELLS[1][0] in msg
    f = _vis_file(tmp_path / VIS_NAME, space, accs=[0.9, "high", 0.8])
    with pytest.raises(DataError, match="'108_final_validation_accuracy', row 1: a string"):
        T.build_nb101_vis_table(f)


# --------------------------------------------------------------------------- tfrecord


def _crc32c_bitwise(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    return c ^ 0xFFFFFFFF


def _masked(data: bytes) -> int:
    c = _crc32c_bitwise(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _frame(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", _masked(length)) + data + struct.pack("<I", _masked(data))


def _model_metrics_class():
    """nasbench.ModelMetrics from a descriptor written after nasbench/lib/model_metrics.proto."""
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="test_model_metrics.proto", package="nasbench_test",
                                             syntax="proto2")
    ev = fdp.message_type.add(name="EvaluationData")
    for number, name in enumerate(("current_epoch", "training_time", "train_accuracy", "validation_accuracy",
                                   "test_accuracy"), 1):
        ev.field.add(name=name, number=number, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    ev.field.add(name="checkpoint_path", number=6, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    mm = fdp.message_type.add(name="ModelMetrics")
    mm.field.add(name="evaluation_data", number=1, type=F.TYPE_MESSAGE, type_name=".nasbench_test.EvaluationData",
                 label=F.LABEL_REPEATED)
    mm.field.add(name="trainable_parameters", number=2, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    mm.field.add(name="total_time", number=3, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("nasbench_test.ModelMetrics"))


ModelMetrics = _model_metrics_class()


def _val(cell: int, epochs: int, repeat: int) -> float:
    return 0.6 + cell / 10 + epochs / 1000 + repeat / 100


def _record(space, cell: int, epochs: int, repeat: int, evaluations: int = 3) -> bytes:
    text, ops, edges = CELLS[cell]
    metrics = ModelMetrics(trainable_parameters=2_000_000 + cell, total_time=5000.0)
    for k in range(evaluations):  # start, half way, end of training
        end = k == evaluations - 1
        metrics.evaluation_data.add(current_epoch=epochs * k / 2, training_time=100.0 * epochs * k / 2 + repeat,
                                    train_accuracy=0.99, validation_accuracy=_val(cell, epochs, repeat) if end else 0.1,
                                    test_accuracy=_val(cell, epochs, repeat) - 0.01 if end else 0.1,
                                    checkpoint_path=f"/ckpt/{cell}-{k}")
    adjacency = "".join(str(x) for row in _matrix(len(ops), edges) for x in row)
    payload = [_hash(space, text), epochs, adjacency, ",".join(ops),
               base64.b64encode(metrics.SerializeToString()).decode()]
    return json.dumps(payload).encode()


def _tfrecord(path: Path, space, epochs=(4, 108), repeats=3, skip=None) -> Path:
    """Records in nasbench_full order (cell, epochs, repeat); `skip` leaves out one (cell, epochs)."""
    with open(path, "wb") as f:
        for cell in range(len(CELLS)):
            for e in epochs:
                if (cell, e) != skip:
                    for r in range(repeats):
                        f.write(_frame(_record(space, cell, e, r)))
    return path


def test_crc32c() -> None:
    assert tfrecord.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert tfrecord.crc32c_python(b"123456789") == 0xE3069283
    data = bytes(range(256)) * 5
    assert tfrecord.crc32c(data) == tfrecord.crc32c_python(data) == _crc32c_bitwise(data)


def test_model_metrics_decoding_matches_protobuf() -> None:
    m = ModelMetrics(trainable_parameters=8_555_530, total_time=1769.5)
    m.evaluation_data.add(current_epoch=108.0, training_time=1768.97, train_accuracy=1.0,
                          validation_accuracy=0.9305, test_accuracy=0.9264, checkpoint_path="/x")
    got = decode_model_metrics(m.SerializeToString())
    assert got.trainable_parameters == 8_555_530 and got.total_time == 1769.5
    ev = got.evaluations[0]
    assert (ev.training_time, ev.validation_accuracy, ev.test_accuracy) == (1768.97, 0.9305, 0.9264)


def test_tfrecord_table(tmp_path: Path, space) -> None:
    f = _tfrecord(tmp_path / "nasbench_full.tfrecord", space)
    t = T.build_nb101_tfrecord_table(f)
    assert t.column_names == ["index", "arch", "cifar10_valid_val_4ep", "cifar10_test_4ep", "cifar10_valid_val_108ep",
                              "cifar10_test_108ep", "params", "training_time_s", "nb101_hash", "iso_class"]
    rows = t.to_pydict()
    assert rows["arch"] == [space.to_str(space.parse(text)) for text, _, _ in CELLS]
    for cell in range(3):
        for e in (4, 108):  # the mean of the 3 repeats' end-of-training values, in percent
            expected = 100 * np.mean([_val(cell, e, r) for r in range(3)])
            assert rows[f"cifar10_valid_val_{e}ep"][cell] == pytest.approx(expected)
            assert rows[f"cifar10_test_{e}ep"][cell] == pytest.approx(expected - 1)
    assert rows["params"] == pytest.approx([2.0, 2.000001, 2.000002])
    assert rows["training_time_s"] == pytest.approx([100.0 * 108 + 1] * 3)  # end of training, mean of repeats
    assert rows["iso_class"] == rows["nb101_hash"]
    meta = json.loads(t.schema.metadata[META_KEY])
    assert meta["builder"] == "nb101_tfrecord" and meta["repeats"] == {"4": 3, "108": 3}
    assert meta["label_columns"] == t.column_names[2:6]
    out = tmp_path / "t.parquet"
    assert T.main(["nb101_tfrecord", "--input", str(f), "--out", str(out)]) == 0
    assert pq.read_table(out).equals(t.replace_schema_metadata(pq.read_table(out).schema.metadata))


def _cli_fails(tmp_path: Path, f: Path, capsys: pytest.CaptureFixture, *fragments: str) -> None:
    out = tmp_path / "out" / "t.parquet"
    assert T.main(["nb101_tfrecord", "--input", str(f), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {f}: ") and err.count("\n") == 1
    for frag in fragments:
        assert frag in err, err
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


def test_tfrecord_truncated_and_corrupt(tmp_path: Path, space, capsys: pytest.CaptureFixture) -> None:
    good = _tfrecord(tmp_path / "good.tfrecord", space).read_bytes()
    sizes = [len(_frame(_record(space, c, e, r))) for c in range(3) for e in (4, 108) for r in range(3)]
    starts = np.cumsum([0] + sizes)
    f = tmp_path / "bad.tfrecord"
    f.write_bytes(good[:starts[7] + 30])  # ends inside record 7's data
    _cli_fails(tmp_path, f, capsys, f"record 7 (byte {starts[7]}): truncated")
    f.write_bytes(good[:starts[4] + 5])  # ends inside record 4's header
    _cli_fails(tmp_path, f, capsys, "record 4", "truncated: the file ends inside the record header")
    data = bytearray(good)
    data[starts[5] + 40] ^= 0x01  # one bit of record 5's data
    f.write_bytes(bytes(data))
    _cli_fails(tmp_path, f, capsys, f"record 5 (byte {starts[5]}): CRC mismatch in the data")
    data = bytearray(good)
    data[starts[2]] ^= 0x01  # record 2's length
    f.write_bytes(bytes(data))
    _cli_fails(tmp_path, f, capsys, "record 2", "CRC mismatch in the length header")


def test_tfrecord_bad_records(tmp_path: Path, space, capsys: pytest.CaptureFixture) -> None:
    f = tmp_path / "bad.tfrecord"
    f.write_bytes(_frame(_record(space, 0, 108, 0)) + _frame(b'{"not": "a list"}'))
    _cli_fails(tmp_path, f, capsys, "record 1: not a NAS-Bench-101 record", "expected a JSON list")
    f.write_bytes(_frame(_record(space, 0, 108, 0, evaluations=2)))
    _cli_fails(tmp_path, f, capsys, "record 0", "metrics hold 2 evaluations, need 3")
    payload = json.loads(_record(space, 1, 108, 0))
    payload[3] = "input,conv5x5,output"
    f.write_bytes(_frame(json.dumps(payload).encode()))
    _cli_fails(tmp_path, f, capsys, f"hash {payload[0]}: not a nb101 cell", "conv5x5")
    payload[3], payload[4] = "input,conv3x3-bn-relu,output", "!!not base64!!"
    f.write_bytes(_frame(json.dumps(payload).encode()))
    _cli_fails(tmp_path, f, capsys, "record 0", "malformed metrics")
    _tfrecord(f, space, skip=(2, 4))
    _cli_fails(tmp_path, f, capsys, "1 cell(s) have no 4-epoch record", _hash(space, CELLS[2][0]))
    f.write_bytes(b"")
    _cli_fails(tmp_path, f, capsys, "no records")
