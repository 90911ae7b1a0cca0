"""Search under a query budget: every method spends the budget on distinct isomorphism classes, respects
cost bounds, writes its outputs, resumes after kill -9 without re-querying, and refuses bad input first."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.data.tables import load_table
from pipeline.search.__main__ import main
from pipeline.search.oracle import ORACLES, Oracle
from pipeline.spaces import get_space

REPO = Path(__file__).resolve().parents[1]
SEARCH_CFG = str(REPO / "configs" / "search" / "nb201_cpu.yaml")
TINY = str(REPO / "configs" / "nb201_tiny.yaml")
SMALL = ["search.queries=40", "search.initial=20", "search.per_round=10", "search.population=20",
         "search.generations=4", "search.rf={n_estimators: 20}"]
LAST_LINE = re.compile(r"^best (\S+) (\d+\.\d{4}) after (\d+) queries$")


@pytest.fixture
def base(prepared, tmp_path) -> list[str]:
    return ["--config", SEARCH_CFG, f"data.table={prepared['table']}", f"data.aux_shards={prepared['shards']}",
            "data.prepare=false", f"run.root={tmp_path / 'runs'}", "train.threads=1"]


@pytest.fixture(scope="module")
def nb201_table(prepared):
    return load_table(prepared["table"])


def _trajectory(run_dir: Path) -> dict:
    return pq.read_table(run_dir / "trajectory.parquet").to_pydict()


def _search(capsys, args: list[str]) -> tuple[dict, dict, str]:
    rc = main(args)
    out = capsys.readouterr()
    assert rc == 0, out.err[-2000:]
    run_dir = Path(re.search(r"^run directory: (.+)$", out.out, re.M).group(1))
    return json.loads((run_dir / "search.json").read_text()), _trajectory(run_dir), out.out


def test_random_evolution_and_rf_spend_the_budget_on_distinct_classes(capsys, base, nb201_table):
    space = get_space("nb201")
    train, test = nb201_table.label("cifar10_valid_val_200ep"), nb201_table.label("cifar10_test_200ep")
    first = {}
    for method in ("random", "evolution", "rf"):
        summary, traj, out = _search(capsys, base + SMALL + [f"search.method={method}"])
        run_dir = Path(summary["run_dir"])
        assert run_dir.name == f"search-nb201-{method}-q40-s0"
        for name in ("config.yaml", "env.json", "search.json", "trajectory.parquet", "best_so_far.png", "state.json"):
            assert (run_dir / name).stat().st_size > 0, name
        assert traj["order"] == list(range(1, 41))
        assert len(set(traj["iso_class"])) == 40  # never an isomorphic duplicate of a queried architecture
        assert traj["iso_class"] == [space.isomorphism_class(space.parse(a)) for a in traj["arch"]]
        rows = nb201_table.rows(traj["arch"])
        np.testing.assert_allclose(traj["label"], train[rows])  # the oracle's answer is the table's train label
        np.testing.assert_allclose(traj["best_so_far"], np.maximum.accumulate(train[rows]))
        best = int(np.argmax(train[rows]))
        assert summary["best_arch"] == traj["arch"][best] and summary["best_found_at"] == best + 1
        assert summary["best_train_label"] == pytest.approx(train[rows][best])
        assert summary["best_eval"] == pytest.approx(test[rows][best]) and summary["queries_used"] == 40
        assert traj["best_so_far_eval"][-1] == pytest.approx(summary["best_eval"])
        m = LAST_LINE.match(out.strip().splitlines()[-1])
        assert m and m.group(1) == "cifar10_test_200ep" and int(m.group(3)) == 40
        assert float(m.group(2)) == pytest.approx(summary["best_eval"], abs=1e-4)
        predicted = np.asarray(traj["predicted"], dtype=float)
        if method == "rf":  # the forest's value for every pick after the initial sample
            assert np.isfinite(predicted[20:]).all() and np.isnan(predicted[:20]).all()
            assert sorted(set(traj["round"])) == [0, 1, 2]
        else:
            assert np.isnan(predicted).all()
        if method == "evolution":
            assert traj["round"][20:] == list(range(1, 21))  # one mutation per oracle call
        first[method] = traj["arch"][:20]
    assert first["random"] == first["evolution"] == first["rf"]  # one initial sample per seed


@pytest.mark.parametrize("method", ["random", "rf"])
def test_cost_bounds_hold_for_every_query(capsys, base, method):
    space = get_space("nb201")
    _, traj, _ = _search(capsys, base + SMALL + [f"search.method={method}", "search.max_params=0.6",
                                                  "search.min_flops=40"])
    costs = [space.cost(space.parse(a)) for a in traj["arch"]]
    assert len(costs) == 40 and all(c["params"] <= 0.6 and c["flops"] >= 40 for c in costs)


def test_unsatisfiable_bound_is_refused_before_any_query(capsys, base, tmp_path):
    rc = main(base + SMALL + ["search.method=random", "search.max_params=0.01"])
    err = capsys.readouterr().err
    assert rc == 2 and "search.max_params=0.01" in err and "params 0.07" in err, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("overrides, message", [
    (["search.queries=10", "search.initial=20"], "search.queries=10 is smaller than the initial sample"),
    (["search.method=bayes"], "unknown search method 'bayes'; registered: evolution, hypernas, random, rf"),
    (["search.oracle=trainer"], "unknown search oracle 'trainer'"),
    (["data.train_label=cifar100_test_200ep"], "column 'cifar100_test_200ep' not in table"),
    (["data.eval_label=imagenet_top1"], "column 'imagenet_top1' not in table"),
    (["search.popualtion=5"], "did you mean 'population'"),
    (["search.method=hypernas", "model.variant=hypernas_h"], "'hypernas_h' has no accuracy regressor"),
    (["search.method=rf", "search.rf={n_trees: 5}"], "'search.rf': unknown setting(s) ['n_trees']"),
    (["search.min_flops=100", "search.max_flops=50"], "search.min_flops=100.0 exceeds search.max_flops=50.0"),
])
def test_bad_input_is_an_error_before_any_work(capsys, base, tmp_path, overrides, message):
    rc = main(base + ["search.method=random", *overrides])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "runs").exists()


def test_a_table_smaller_than_the_space_keeps_every_query_inside_it(capsys, base, prepared, tmp_path):
    full = pq.read_table(prepared["table"])
    rows = np.random.default_rng(0).choice(full.num_rows, size=600, replace=False)
    part = tmp_path / "part.parquet"
    pq.write_table(full.take(np.sort(rows)), part)
    summary, traj, _ = _search(capsys, base + SMALL + ["search.method=rf", f"data.table={part}"])
    assert set(traj["arch"]) <= set(load_table(part).archs) and len(set(traj["iso_class"])) == 40
    assert summary["projected_children"] > 0  # mutations leave a 600-cell table: projected back onto it
    tiny = tmp_path / "tiny.parquet"
    pq.write_table(full.take(np.arange(30)), tiny)
    rc = main(base + SMALL + ["search.method=random", f"data.table={tiny}", "run.name=tiny"])
    err = capsys.readouterr().err
    assert rc == 2 and "budget of 40 exceeds the" in err and "isomorphism classes of table" in err, err


_SLOW_ORACLE = """
import sys, time
from pipeline.search import oracle
log, pause = open(sys.argv[1], "a"), float(sys.argv[2])
plain = oracle.TableOracle.query
def query(self, archs):
    labels = plain(self, archs)
    log.write("".join(self.space.to_str(a) + "\\n" for a in archs)); log.flush()
    time.sleep(pause)
    return labels
oracle.TableOracle.query = query
from pipeline.search.__main__ import main
sys.exit(main(sys.argv[3:]))
"""


def _rows(path: Path) -> int:
    try:
        return pq.read_metadata(path).num_rows
    except Exception:  # not written yet (or being replaced)
        return 0


def test_kill_9_mid_search_then_the_same_command_continues_without_requerying(capsys, base, tmp_path):
    args = base + SMALL + ["search.method=evolution"]
    reference = _search(capsys, args + [f"run.root={tmp_path / 'reference'}"])[1]  # the last override wins
    script = tmp_path / "slow_oracle.py"
    script.write_text(_SLOW_ORACLE)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    traj_path = tmp_path / "runs" / "search-nb201-evolution-q40-s0" / "trajectory.parquet"
    first_log, second_log = tmp_path / "calls1.txt", tmp_path / "calls2.txt"
    proc = subprocess.Popen([sys.executable, str(script), str(first_log), "0.25", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while _rows(traj_path) < 26 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = _rows(traj_path)
    assert 26 <= done < 40, done
    kept = _trajectory(traj_path.parent)["arch"]
    rc = subprocess.run([sys.executable, str(script), str(second_log), "0", *args], cwd=REPO, env=env,
                        capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr[-2000:]
    final = _trajectory(traj_path.parent)
    assert final["arch"][:done] == kept                 # the queried set survived the kill
    assert second_log.read_text().split() == final["arch"][done:]   # only the rest was queried
    assert final["arch"] == reference["arch"]           # and the search made the uninterrupted run's choices
    assert len(set(final["iso_class"])) == 40
    # a finished search re-run queries nothing and reports the same result
    again = subprocess.run([sys.executable, str(script), str(tmp_path / "calls3.txt"), "0", *args], cwd=REPO,
                           env=env, capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.splitlines()[-1] == rc.stdout.splitlines()[-1]
    assert not (tmp_path / "calls3.txt").read_text()


def test_another_config_on_the_same_run_directory_is_refused(capsys, base):
    _search(capsys, base + SMALL + ["search.method=evolution"])
    rc = main(base + SMALL + ["search.method=evolution", "search.tournament=3"])
    err = capsys.readouterr().err
    assert rc == 2 and "search.tournament: before 10, now 3" in err, err
    summary, traj, _ = _search(capsys, base + SMALL[1:] + ["search.queries=45", "search.method=evolution"])
    assert summary["queries_used"] == 45 and len(set(traj["iso_class"])) == 45  # a larger budget continues


@ORACLES.register("test_params")
class ParamCountOracle(Oracle):
    """No table: the label is the benchmark network's parameter count (a stand-in for a training oracle)."""

    label = "params"

    @classmethod
    def from_config(cls, cfg, space):
        o = cls()
        o.space = space
        return o

    def query(self, archs):
        return np.asarray([self.space.cost(a)["params"] for a in archs])


def test_an_oracle_without_a_table_searches_the_space_itself(capsys, base):
    summary, traj, out = _search(capsys, base + SMALL + ["search.method=rf", "search.oracle=test_params",
                                                          "data.table=/nonexistent.parquet"])
    space = get_space("nb201")
    assert traj["label"] == [space.cost(space.parse(a))["params"] for a in traj["arch"]]
    assert len(set(traj["iso_class"])) == 40 and summary["best_eval"] is None
    assert out.strip().splitlines()[-1] == f"best cifar10_valid_val_200ep {max(traj['label']):.4f} after 40 queries"


def test_tiny_hypernas_search_trains_through_the_trainer_every_round(capsys, tiny_overrides):
    summary, traj, out = _search(capsys, ["--config", TINY, *tiny_overrides, "train.threads=1", "search.method=hypernas",
                                          "search.queries=30", "search.initial=20", "search.per_round=5",
                                          "search.retrain_epochs=1", "search.population=10", "search.generations=2"])
    run_dir = Path(summary["run_dir"])
    assert run_dir.name == "search-nb201-hypernas-q30-s0" and summary["predictor"] == "hypernas"
    assert traj["round"] == [0] * 20 + [1] * 5 + [2] * 5 and len(set(traj["iso_class"])) == 30
    assert np.isfinite(np.asarray(traj["predicted"][20:], dtype=float)).all()
    for k, n in ((1, 20), (2, 25)):
        table = load_table(run_dir / "tables" / f"round{k:02d}.parquet")  # the core schema, queried pairs only
        assert table.archs == traj["arch"][:n] and table.meta["label_columns"] == ["cifar10_valid_val_200ep"]
        np.testing.assert_allclose(table.label("cifar10_valid_val_200ep"), traj["label"][:n])
        assert list(table.columns["iso_class"]) == traj["iso_class"][:n]
        import yaml
        cfg = yaml.safe_load((run_dir / "rounds" / f"round{k:02d}" / "config.yaml").read_text())
        assert cfg["data"]["num_train"] == n and cfg["train"]["epochs"] == 1 and cfg["model"]["variant"] == "hypernas"
        assert cfg["data"]["eval_label"] == "cifar10_valid_val_200ep"  # the test label never reaches a round
        assert (run_dir / "rounds" / f"round{k:02d}" / "checkpoints" / "latest").is_file()
    assert LAST_LINE.match(out.strip().splitlines()[-1])


@pytest.mark.parametrize("space_name, bench, label", [("nb101", "nasbench101", "cifar10_valid_val_108ep"),
                                                      ("darts", "nasbench301", "val_accuracy")])
def test_search_runs_on_the_other_spaces_tables(capsys, shared_data, tmp_path, space_name, bench, label):
    table = tmp_path / f"{space_name}.parquet"  # built from the shared benchmark file when missing
    summary, traj, _ = _search(capsys, ["--config", str(REPO / "configs" / f"{space_name}_cpu.yaml"),
                                        f"data.table={table}", f"data.benchmark_dir={shared_data / bench}",
                                        f"run.root={tmp_path / 'runs'}", "search.method=rf", "search.queries=30",
                                        "search.initial=10", "search.per_round=10", "search.population=10",
                                        "search.generations=2", "search.rf={n_estimators: 20}"])
    t = load_table(table)
    assert set(traj["arch"]) <= set(t.archs) and len(set(traj["iso_class"])) == 30
    np.testing.assert_allclose(traj["label"], t.label(label)[t.rows(traj["arch"])])
    assert summary["space"] == space_name and summary["projected_children"] > 0


def test_sigterm_mid_retrain_exits_75_and_the_rerun_makes_the_uninterrupted_choices(capsys, tiny_overrides, tmp_path):
    args = ["--config", TINY, *tiny_overrides, "train.threads=1", "search.method=hypernas", "search.queries=30",
            "search.initial=20", "search.per_round=5", "search.retrain_epochs=8", "search.population=10",
            "search.generations=2", "run.progress=false"]
    reference = _search(capsys, args + [f"run.root={tmp_path / 'reference'}"])[1]
    run_dir = tmp_path / "runs" / "search-nb201-hypernas-q30-s0"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.search", *args], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    latest = run_dir / "rounds" / "round01" / "checkpoints" / "latest"
    deadline = time.time() + 120
    while not latest.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-2000:]  # the trainer checkpointed at an update boundary
    assert "re-run the same command to resume" in err
    assert not (run_dir / "rounds" / "round01" / "results.json").exists() and _rows(run_dir / "trajectory.parquet") == 20
    _, traj, _ = _search(capsys, args)
    assert traj["arch"] == reference["arch"]
    np.testing.assert_allclose(traj["predicted"][20:], reference["predicted"][20:], rtol=1e-5)


def test_benchmark_summarises_methods_over_seeds(prepared, tmp_path):
    from benchmarks import search as bench
    out = tmp_path / "bench"
    rc = bench.main(["--methods", "random,evolution", "--seeds", "0", "--queries", "40", "--out", str(out),
                     f"data.table={prepared['table']}", "data.prepare=false", "search.initial=20"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    ref = s["reference"]
    assert ref["eval_optimum"] == pytest.approx(94.3733, abs=1e-3) and ref["train_optimum"] == pytest.approx(91.57)
    assert ref["train_optimum_eval"] == pytest.approx(94.2967, abs=1e-3)  # the test accuracy of the best-by-validation cell
    for r in s["records"]:
        traj = _trajectory(REPO / r["run_dir"])  # repo-relative, or absolute outside the repository
        assert r["best_eval"] == pytest.approx(traj["best_so_far_eval"][-1]) and r["queries_used"] == 40
        reach = [i + 1 for i, v in enumerate(traj["best_so_far_eval"]) if v >= 94.3]
        assert r["reach_best"] == (reach[0] if reach else None)
    assert set(s["table"]) == {"random", "evolution"} and (out / "best_so_far.png").stat().st_size > 0
    assert "| random |" in (out / "summary.md").read_text()
