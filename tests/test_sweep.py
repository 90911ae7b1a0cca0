"""Ray Tune sweeps: spec validation without Ray, then real sweeps on a real Ray head on loopback.

The head is started with `ray start --head` on free ports and its own short temp dir, in its own
process group, and stopped by that group (TERM, then KILL) when the module ends.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import ConfigError
from pipeline.sweep import ERROR_MARKER, RESULT_MARKER, load_spec

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "configs" / "nb201_tiny.yaml"
TINY_SWEEP = REPO / "configs" / "sweeps" / "tiny.yaml"
RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spec(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(f"config: {TINY_CONFIG}\n" + text)
    return path


def _data_sets(prepared) -> list[str]:
    return ["--set", f"data.table={prepared['table']}", "--set", f"data.aux_shards={prepared['shards']}",
            "--set", "data.prepare=false"]


# What a driver needs to reach the test's Ray head (filled by the ray_head fixture): Ray's single-machine
# mode (else it swaps 127.0.0.1 for the routable address) and the head's token file.
_RAY_ENV: dict[str, str] = {}


def _sweep(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.sweep", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **_RAY_ENV})


# --------------------------------------------------------------------------------------------------
# Bad input, caught before Ray starts


def test_unknown_axis_key_fails_naming_the_key(tmp_path):
    spec = _spec(tmp_path, "grid:\n  model.encoder.conectivity: [sum, concat]\n")
    with pytest.raises(ConfigError, match=r"model\.encoder\.conectivity.*did you mean 'connectivity'"):
        load_spec(spec)
    out = _sweep(str(spec), "--storage", str(tmp_path / "out"), timeout=60)
    assert out.returncode == 2 and "model.encoder.conectivity" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "out").exists()


def test_bad_axis_value_fails_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.encoder\.connectivity.*'sum' or 'concat'"):
        load_spec(_spec(tmp_path, "grid:\n  model.encoder.connectivity: [sum, add]\n"))


@pytest.mark.parametrize("text, match", [
    ("grid: {}\n", "grid is empty"),
    ("name: x\n", "grid is empty"),
    ("grid:\n  loss.q: []\n", "grid axis 'loss.q' has no values"),
    ("grid:\n  loss.q: [1.5, 1.5]\n", "repeats a value"),
    ("random:\n  train.lr: {lognormal: [1, 2]}\n", "random axis 'train.lr'"),
    ("grid:\n  loss.q: [1.5]\nresources: {cpus: 1}\n", "resources"),
    ("grid:\n  loss.q: [1.5]\nschedular: asha\n", "unknown key"),
])
def test_malformed_specs_are_rejected(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_spec(_spec(tmp_path, text))


def test_grid_order_and_seeded_random_axes(tmp_path):
    text = ("grid:\n  data.num_train: [20, 30]\n  loss.q: [1.5, 2]\nnum_samples: 2\nrandom_seed: 3\n"
            "random:\n  train.lr: {loguniform: [0.0001, 0.01]}\n")
    a, b = load_spec(_spec(tmp_path, text)), load_spec(_spec(tmp_path, text))
    assert len(a.trials) == 8
    assert [(t.axes["data.num_train"], t.axes["loss.q"]) for t in a.trials[::2]] == [(20, 1.5), (20, 2), (30, 1.5), (30, 2)]
    assert [t.axes for t in a.trials] == [t.axes for t in b.trials]  # resumable: the same draws
    assert all(1e-4 <= t.axes["train.lr"] <= 1e-2 for t in a.trials)
    assert a.configs[a.trials[-1].trial_id].data.num_train == 30


def test_unreachable_address_fails_fast(tmp_path, prepared):
    t0 = time.time()
    out = _sweep(str(TINY_SWEEP), "--address", f"127.0.0.1:{_free_port()}", "--storage", str(tmp_path),
                 *_data_sets(prepared), timeout=60)
    assert out.returncode == 2 and "no Ray cluster reachable" in out.stderr, out.stderr
    assert time.time() - t0 < 30
    assert not (tmp_path / "tiny" / "runs").exists()


# --------------------------------------------------------------------------------------------------
# A real Ray head on loopback


@pytest.fixture(scope="module")
def ray_head():
    from pipeline.ray_cluster import new_token_file

    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: socket paths have a length limit
    port = _free_port()
    # loopback only, token required: the head a test starts must not be open to other users of the machine
    _RAY_ENV.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
                     "RAY_AUTH_TOKEN_PATH": str(new_token_file(Path(temp) / "token"))})
    cmd = [str(RAY), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", f"--temp-dir={temp}",
           "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
           f"--ray-client-server-port={_free_port()}", f"--dashboard-port={_free_port()}",
           f"--dashboard-agent-listen-port={_free_port()}"]
    # Its own session: `ray start` leads a new process group that every daemon it leaves behind shares.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, **_RAY_ENV})
    log, _ = proc.communicate(timeout=120)
    pgid = proc.pid
    if proc.returncode != 0:
        _stop_group(pgid)
        pytest.fail(f"ray start failed: {log[-2000:]}")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _stop_group(pgid)
        _RAY_ENV.clear()
        shutil.rmtree(temp, ignore_errors=True)


def _stop_group(pgid: int) -> None:
    def alive() -> bool:
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False

    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        if not alive():
            return
        os.killpg(pgid, sig)
        deadline = time.time() + wait
        while alive() and time.time() < deadline:
            time.sleep(0.2)


@pytest.mark.ray
def test_four_trial_sweep_through_address(ray_head, prepared, tmp_path):
    out = _sweep(str(TINY_SWEEP), "--address", ray_head, "--storage", str(tmp_path), *_data_sets(prepared))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    sweep = tmp_path / "tiny"
    df = pd.read_parquet(sweep / "results.parquet")
    assert len(df) == 4 and (df["status"] == "ok").all(), df
    assert sorted(df["model.encoder.connectivity"].unique()) == ["concat", "sum"]
    assert df["kendall_tau"].between(-1, 1).all() and df["spearman"].between(-1, 1).all()
    assert df["num_train"].eq(20).all() and sorted(df["train.seed"]) == [0, 0, 1, 1]
    report = (sweep / "report.md").read_text()
    assert "| setting | 20 archs |" in report
    for setting in ("connectivity=sum", "connectivity=concat"):
        row = next(l for l in report.splitlines() if l.startswith(f"| {setting} |"))
        assert "±" in row and "(n=2)" in row, row
    assert (sweep / "tau_vs_size.png").read_bytes()[:4] == b"\x89PNG"
    # each epoch reached Tune (two epochs + the final result), and the trial ran in the sweep's run dir
    tid = df["trial_id"].iloc[0]
    results = [json.loads(l) for l in (sweep / "tune" / tid / "result.json").read_text().splitlines()]
    assert [r["epoch"] for r in results] == [1, 2, 2] and "kendall_tau" in results[-1]
    assert (sweep / "runs" / tid / "predictions.parquet").is_file()
    # recorded paths name no machine: run dirs relative to the sweep, spec and base config to the repository
    assert all((sweep / run_dir / "predictions.parquet").is_file() for run_dir in df["run_dir"])
    record = json.loads((sweep / "sweep.json").read_text())
    assert record["spec_file"] == "configs/sweeps/tiny.yaml" and record["base_config"] == "configs/nb201_tiny.yaml"
    # the report rebuilds from the directory alone
    (sweep / "report.md").unlink()
    assert _sweep("report", str(sweep), timeout=60).returncode == 0
    assert (sweep / "report.md").read_text() == report
    # the same sweep again without --resume is refused
    again = _sweep(str(TINY_SWEEP), "--address", ray_head, "--storage", str(tmp_path), *_data_sets(prepared))
    assert again.returncode == 2 and "--resume" in again.stderr


@pytest.mark.ray
def test_resources_no_node_can_hold_fail_before_any_trial(ray_head, prepared, tmp_path):
    spec = _spec(tmp_path, "name: big\ngrid:\n  train.seed: [0]\nresources: {cpu: 64}\n")
    out = _sweep(str(spec), "--address", ray_head, "--storage", str(tmp_path), *_data_sets(prepared), timeout=90)
    assert out.returncode == 2 and "no node" in out.stderr and "cpu 64" in out.stderr, out.stderr
    assert not (tmp_path / "big" / "runs").exists()


@pytest.mark.ray
def test_killed_driver_resumes_without_rerunning_finished_trials_and_records_failures(ray_head, prepared, tmp_path):
    missing = tmp_path / "missing.parquet"
    spec = _spec(tmp_path, f"name: kill\noverrides: {{train.epochs: 2}}\nmax_concurrent: 1\n"
                           f"grid:\n  data.table: [{prepared['table']}, {missing}]\n  train.seed: [0, 1]\n")
    args = [str(spec), "--address", ray_head, "--storage", str(tmp_path),
            "--set", f"data.aux_shards={prepared['shards']}", "--set", "data.prepare=false"]
    sweep = tmp_path / "kill"
    driver = subprocess.Popen([sys.executable, "-m", "pipeline.sweep", *args], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **_RAY_ENV})
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not list(sweep.glob(f"runs/*/{RESULT_MARKER}")):
            assert driver.poll() is None, "the driver ended before any trial finished"
            time.sleep(0.2)
        finished = list(sweep.glob(f"runs/*/{RESULT_MARKER}"))
        assert finished, "no trial finished in time"
    finally:
        driver.kill()  # SIGKILL: no chance to save anything
        driver.wait()
    run = finished[0].parent
    stamps = {p.name: p.stat().st_mtime_ns for p in (finished[0], run / "results.json", run / "predictions.parquet")}
    assert not (sweep / "results.parquet").exists()

    out = _sweep(*args, "--resume")
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]  # 1: some trials failed
    df = pd.read_parquet(sweep / "results.parquet").set_index("trial_id")
    assert len(df) == 4
    assert {p.name: p.stat().st_mtime_ns for p in (finished[0], run / "results.json",
                                                    run / "predictions.parquet")} == stamps, "finished trial reran"
    good = df[df["data.table"] == str(prepared["table"])]
    bad = df[df["data.table"] == str(missing)]
    assert (good["status"] == "ok").all() and good["kendall_tau"].notna().all(), good
    assert (bad["status"] == "failed").all() and bad["error"].str.contains("missing.parquet").all(), bad
    assert all((sweep / "runs" / t / ERROR_MARKER).is_file() for t in bad.index)
    report = (sweep / "report.md").read_text()
    assert "## Failed trials" in report and "missing.parquet" in report


def test_auto_address_checks_ray_address_first(monkeypatch):
    from pipeline.errors import UserError
    from pipeline.sweep import check_address

    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{_free_port()}")
    with pytest.raises(UserError, match="no Ray cluster reachable"):
        check_address("auto")
    with pytest.raises(UserError, match="not host:port"):
        check_address("localhost")


def test_asha_spec_is_accepted_and_fifo_is_the_default(tmp_path):
    fifo = load_spec(_spec(tmp_path, "grid:\n  train.seed: [0, 1]\n"))
    asha = load_spec(_spec(tmp_path, "grid:\n  train.seed: [0, 1]\nscheduler: {type: asha, grace_period: 2}\n", "a.yaml"))
    assert fifo.scheduler == {"type": "fifo"} and asha.scheduler["type"] == "asha"
    with pytest.raises(ConfigError, match="scheduler.type"):
        load_spec(_spec(tmp_path, "grid:\n  train.seed: [0]\nscheduler: hyperband\n", "b.yaml"))


def test_cv_folds_add_selection_trials_and_the_report_picks_by_cv_not_test(tmp_path):
    from pipeline.sweep import RESULT_MARKER, spec_record, write_report

    spec = load_spec(_spec(tmp_path, "grid:\n  loss.q: [1.5, 2]\ncv_folds: 2\n"), storage=str(tmp_path))
    assert len(spec.trials) == 6
    cv_trials = [t for t in spec.trials if "data.cv_fold" in t.axes]
    assert len(cv_trials) == 4 and all(spec.configs[t.trial_id].data.cv_folds == 2 for t in cv_trials)
    sweep = spec.sweep_dir
    sweep.mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps(spec_record(spec)))
    # q=2 has the higher TEST tau, q=1.5 the higher CV tau: the report must pick q=1.5
    for t in spec.trials:
        q, fold = t.axes["loss.q"], t.axes.get("data.cv_fold")
        res = {"kendall_tau": {1.5: 0.70, 2: 0.80}[q] if fold is None else float("nan"),
               "cv_tau": {1.5: 0.75, 2: 0.65}[q] if fold is not None else float("nan"), "spearman": 0.9}
        (sweep / "runs" / t.trial_id).mkdir(parents=True)
        (sweep / "runs" / t.trial_id / RESULT_MARKER).write_text(json.dumps(res))
    report = write_report(sweep).read_text()
    best = report.split("## Best setting per train size")[1]
    assert "**q=1.5** CV τ 0.750" in best and "its test τ 0.700" in best, best


def test_without_cv_trials_no_setting_is_called_best(tmp_path):
    from pipeline.sweep import RESULT_MARKER, spec_record, write_report

    spec = load_spec(_spec(tmp_path, "grid:\n  loss.q: [1.5, 2]\n"), storage=str(tmp_path))
    sweep = spec.sweep_dir
    sweep.mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps(spec_record(spec)))
    for t in spec.trials:
        (sweep / "runs" / t.trial_id).mkdir(parents=True)
        (sweep / "runs" / t.trial_id / RESULT_MARKER).write_text(json.dumps({"kendall_tau": 0.7, "spearman": 0.9}))
    assert "No setting is called best" in write_report(sweep).read_text()
