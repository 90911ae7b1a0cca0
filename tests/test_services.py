"""What the project's single-machine commands listen on (loopback only), and Ray token files.

Each service test runs the project's own command (a local sweep; the launcher behind `just train-ddp`
and `just train-deepspeed`), samples the listening sockets of that process and all its descendants
every 0.1 s by PID (tests/listeners.py) and fails on any bind outside loopback. The Ray head of
cluster/ray_slurm.sbatch and its token are tested on real SLURM in tests/test_cluster.py.
"""
from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from listeners import ListenerWatch, non_loopback

from pipeline import launch
from pipeline.ray_cluster import TokenFileError, check_token_file, new_token_file

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "nb201_tiny.yaml")
TINY_SWEEP = str(REPO / "configs" / "sweeps" / "tiny.yaml")
# as tests/test_distributed.py: 12 archs, 4 per update (2 per rank), one thread per rank
SMALL = ["data.num_train=12", "train.accumulate=4", "train.micro_batch=1", "train.epochs=1", "train.threads=1",
         "run.tensorboard=false", "data.val_archs=20"]
RAY_ENV = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RAY_ENV}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", **extra)
    return env


def _watched(cmd: list[str], env: dict[str, str], timeout: float = 300) -> tuple[int, str, ListenerWatch]:
    """Run `cmd`, sampling the listening sockets of its process tree until it exits."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    watch = ListenerWatch([proc.pid]).start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        raise AssertionError(f"{cmd[:4]} still running after {timeout:.0f} s\n{out[-4000:]}") from None
    finally:
        watch.stop()
    return proc.returncode, out, watch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------------
# The check itself


def test_the_watch_flags_wildcard_binds_of_a_grandchild():
    """A child listening on 127.0.0.1 whose own child listens on 0.0.0.0 (TCP) and binds UDP 0.0.0.0."""
    grandchild = ("import socket, time\n"
                  "t = socket.socket(); t.bind(('0.0.0.0', 0)); t.listen()\n"
                  "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('0.0.0.0', 0))\n"
                  "time.sleep(1.5)\n")
    child = ("import socket, subprocess, sys\n"
             "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
             f"subprocess.run([sys.executable, '-c', {grandchild!r}])\n")
    rc, out, watch = _watched([sys.executable, "-c", child], _env(), timeout=60)
    assert rc == 0, out
    bad = non_loopback(watch.binds)
    assert sorted((b.kind, b.ip) for b in bad) == [("tcp", "0.0.0.0"), ("udp", "0.0.0.0")], watch.report()
    assert any(b.ip == "127.0.0.1" and b.kind == "tcp" for b in watch.binds), watch.report()


# --------------------------------------------------------------------------------------------------
# The project's single-machine services


@pytest.mark.ray
@pytest.mark.slow
def test_local_sweep_listens_on_loopback_only(prepared, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    cmd = [sys.executable, "-m", "pipeline.sweep", TINY_SWEEP, "--storage", str(tmp_path / "sweeps"),
           "--set", "train.epochs=1", "--set", f"data.table={prepared['table']}",
           "--set", f"data.aux_shards={prepared['shards']}", "--set", "data.prepare=false"]
    rc, out, watch = _watched(cmd, _env(HOME=str(home)))
    print(watch.report())
    assert rc == 0 and "4/4 trials ok" in out, out[-4000:]
    names = {b.name for b in watch.binds}
    assert {"gcs_server", "raylet"} <= names, watch.report()  # the watch saw Ray's servers ...
    assert any(n.startswith("ray::") for n in names), watch.report()  # ... and its workers
    assert not non_loopback(watch.binds), f"non-loopback binds:\n{watch.report()}"
    # token authentication with a private token that is gone afterwards; Ray's default file (created
    # world-readable when a local ray.init finds none) was not written
    m = re.search(r"token authentication on \(token (\S+)\)", out)
    assert m, out[-4000:]
    assert not Path(m.group(1)).parent.exists()
    assert not (home / ".ray").exists()


def test_local_ray_is_refused_after_ray_was_imported():
    """Loopback-only mode and token auth are import-time settings of Ray: no silent half-configured Ray."""
    code = "import ray\nfrom pipeline.ray_cluster import connect\nconnect(None, 1)\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "must start the local Ray before `ray` is imported" in out.stderr, out.stderr
    assert "Started a local Ray instance" not in out.stderr


def _training_binds(cmd: list[str], run: Path) -> ListenerWatch:
    rc, out, watch = _watched(cmd, _env(), timeout=420)
    print(watch.report())
    assert rc == 0, out[-4000:]
    m = re.search(r"rendezvous store on 127\.0\.0\.1:(\d+) only", out)
    assert m, out[-4000:]
    store = [b for b in watch.binds if b.port == int(m.group(1)) and b.kind == "tcp"]
    assert store and all(b.ip == "127.0.0.1" for b in store), watch.report()
    assert len({b.pid for b in watch.binds}) >= 3, watch.report()  # the launcher and both ranks (gloo)
    assert not non_loopback(watch.binds), f"non-loopback binds:\n{watch.report()}"
    assert json.loads((run / "results.json").read_text())["world_size"] == 2
    return watch


@pytest.mark.distributed
def test_two_rank_torchrun_listens_on_loopback_only(tiny_overrides, tmp_path):
    """`just train-ddp 2 ...`: the rendezvous store and both gloo ranks on 127.0.0.1 only."""
    _training_binds([sys.executable, "-m", "pipeline.launch", "torchrun", "--nproc_per_node", "2",
                     "pipeline/train.py", "--config", TINY, *tiny_overrides, *SMALL, "run.name=ddp"],
                    tmp_path / "runs" / "ddp")


@pytest.mark.distributed
@pytest.mark.slow
def test_two_rank_deepspeed_listens_on_loopback_only(tiny_overrides, tmp_path):
    """`just train-deepspeed configs/deepspeed/zero1.json 2 ...`: rank 0 uses the launcher's loopback store."""
    _training_binds([sys.executable, "-m", "pipeline.launch", "deepspeed", "--num_gpus", "2", "pipeline/train.py",
                     "--config", TINY, *tiny_overrides, *SMALL, "run.name=ds",
                     "--deepspeed_config", str(REPO / "configs" / "deepspeed" / "zero1.json")],
                    tmp_path / "runs" / "ds")


@pytest.mark.parametrize("argv, fragment", [
    (["torchrun", "--master_addr", "0.0.0.0", "--nproc_per_node", "2", "pipeline/train.py"], "remove --master_addr"),
    (["torchrun", "--standalone", "--nproc_per_node", "2", "pipeline/train.py"], "remove --standalone"),
    (["torchrun", "--rdzv-endpoint=node1:29500", "pipeline/train.py"], "remove --rdzv_endpoint"),
    (["deepspeed", "--master_port=29500", "--num_gpus", "2", "pipeline/train.py"], "remove --master_port"),
    (["torchrun", "--nnodes", "2", "--nproc_per_node", "2", "pipeline/train.py"], "several nodes need --rendezvous"),
    (["--rendezvous", "node1", "--node-rank", "0", "torchrun", "pipeline/train.py"], "needs HOST:PORT"),
    (["--rendezvous", "localhost:0", "--node-rank", "0", "torchrun", "--nnodes", "2", "pipeline/train.py"],
     "resolves to 127.0.0.1 (loopback) on this node, but other nodes must reach it"),
])
def test_launcher_refuses_what_would_move_the_rendezvous(capsys, monkeypatch, argv, fragment):
    # the test-only switch for simulated nodes must be off (set to anything but 1) for the real-cluster checks
    monkeypatch.setenv("HYPERNAS_ALLOW_LOOPBACK_RENDEZVOUS", "0")
    assert launch.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err, err


def test_launcher_checks_only_the_options_before_the_training_script():
    opts = launch.launcher_options(["--nproc_per_node", "2", "--nnodes=1", "pipeline/train.py", "--master_addr", "x"])
    assert opts == {"nproc_per_node": "2", "nnodes": "1"}


# --------------------------------------------------------------------------------------------------
# Ray token files


@pytest.mark.parametrize("case, fragment", [
    ("missing", "does not exist; create one with `python -m pipeline.ray_cluster new-token"),
    ("0644", "is accessible to other users (mode 0644)"),
    ("0640", "is accessible to other users (mode 0640)"),
    ("empty", "is empty"),
])
def test_bad_token_files_are_refused_naming_the_file_and_the_fix(tmp_path, case, fragment):
    path = tmp_path / "token"
    if case != "missing":
        path.write_text("" if case == "empty" else "ab" * 32)
        path.chmod(0o600 if case == "empty" else int(case, 8))
    with pytest.raises(TokenFileError) as e:
        check_token_file(path)
    assert str(path) in str(e.value) and fragment in str(e.value), e.value
    if case.startswith("06"):
        assert f"chmod 600 {path}" in str(e.value)


def test_new_token_file_is_private_and_never_overwrites(tmp_path):
    path = new_token_file(tmp_path / "tokens" / "job.token")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    token = path.read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    assert check_token_file(path) == path
    with pytest.raises(TokenFileError, match="already exists"):
        new_token_file(path)
    assert path.read_text().strip() == token and [p.name for p in path.parent.iterdir()] == ["job.token"]


@pytest.mark.parametrize("case, fragment", [
    ("world-readable", "is accessible to other users (mode 0644)"),
    ("missing", "does not exist"),
    ("mode-token-without-token", "RAY_AUTH_MODE=token but there is no token"),
])
def test_sweep_driver_refuses_a_bad_token_before_connecting(tmp_path, case, fragment):
    token = tmp_path / "token"
    env = _env(HOME=str(tmp_path))  # no ~/.ray/auth_token to fall back on
    if case == "world-readable":
        token.write_text("ab" * 32)
        token.chmod(0o644)
    if case == "mode-token-without-token":
        env["RAY_AUTH_MODE"] = "token"
    else:
        env["RAY_AUTH_TOKEN_PATH"] = str(token)
    # nothing listens at the address: the token is refused before any connection is tried
    out = subprocess.run([sys.executable, "-m", "pipeline.sweep", TINY_SWEEP, "--address", f"127.0.0.1:{_free_port()}",
                          "--storage", str(tmp_path / "out")], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "error: " in out.stderr and fragment in out.stderr and "Traceback" not in out.stderr, out.stderr
    if case != "mode-token-without-token":
        assert str(token) in out.stderr
    assert not (tmp_path / "out").exists()


def test_token_cli_writes_and_checks(tmp_path):
    path = tmp_path / "t" / "job.token"
    made = subprocess.run([sys.executable, "-m", "pipeline.ray_cluster", "new-token", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0 and made.stdout.strip() == str(path), made.stderr
    path.chmod(0o604)
    checked = subprocess.run([sys.executable, "-m", "pipeline.ray_cluster", "check-token", str(path)], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 2 and f"chmod 600 {path}" in checked.stderr, checked.stderr
