"""`python -m pipeline.spaces describe`: one `key: value` a line, for every registered space; bad input exits 2."""
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.spaces import SPACES, get_space
from pipeline.spaces.__main__ import main

REPO = Path(__file__).resolve().parents[2]
ARCH = "k3e4-k5e6|k3e3-k3e3-k7e6|k5e4-k5e4|k3e6-k3e6-k3e6-k3e6|k7e3-k5e3"


def _lines(capsys) -> dict[str, str]:
    out = capsys.readouterr().out.strip().splitlines()
    assert all(": " in line for line in out), out
    return dict(line.split(": ", 1) for line in out)


def test_describe_prints_canonical_string_params_and_flops(capsys):
    assert main(["describe", "--space", "mobilenetv3", "--arch", f"  {ARCH} "]) == 0
    got = _lines(capsys)
    assert got["arch"] == ARCH and got["space"] == "mobilenetv3"
    cost = get_space("mobilenetv3").cost(get_space("mobilenetv3").parse(ARCH))
    assert float(got["params_m"]) == pytest.approx(cost["params"], abs=1e-4)
    assert float(got["flops_m"]) == pytest.approx(cost["flops"], abs=1e-4)
    assert list(got) == ["space", "arch", "iso_class", "params_m", "flops_m"]


def test_describe_reads_ofa_json_and_applies_settings(capsys):
    sp = get_space("mobilenetv3")
    assert main(["describe", "--space", "mobilenetv3", "--arch", sp.to_json(sp.parse(ARCH)),
                 "--set", "benchmark_image_size=160", "--set", "benchmark_classes=10"]) == 0
    got = _lines(capsys)
    want = get_space("mobilenetv3", benchmark_image_size=160, benchmark_classes=10).cost(sp.parse(ARCH))
    assert got["arch"] == ARCH and float(got["flops_m"]) == pytest.approx(want["flops"], abs=1e-4)
    assert float(got["flops_m"]) < float(sp.cost(sp.parse(ARCH))["flops"])


@pytest.mark.parametrize("name", SPACES.names())
def test_describe_works_for_every_registered_space(name, capsys):
    cls = SPACES.get(name)
    sp = cls(cls.Settings())
    arch = sp.sample(random.Random(0))
    assert main(["describe", "--space", name, "--arch", sp.to_str(arch)]) == 0
    got = _lines(capsys)
    assert got["arch"] == sp.to_str(arch) and float(got["params_m"]) > 0 and float(got["flops_m"]) > 0


@pytest.mark.parametrize("argv, match", [
    (["--space", "mobilenetv3", "--arch", ARCH.replace("k3e4", "k4e4", 1)], r"stage 1 block 1 has kernel 4"),
    (["--space", "mobilenetv3", "--arch", ARCH, "--set", "width=2"], r"unknown config key 'space.settings.width' "
                                                                     r"\(did you mean 'width_mult'\?\)"),
    (["--space", "mobilenetv3", "--arch", ARCH, "--set", "width_mult=wide"], r"width_mult.*must be a number"),
    (["--space", "mobilenetv3", "--arch", ARCH, "--set", "width_mult"], r"expected key=value"),
    (["--space", "mobilenetv4", "--arch", ARCH], r"unknown search space 'mobilenetv4'"),
])
def test_bad_input_prints_an_error_and_exits_2(argv, match, capsys):
    assert main(["describe", *argv]) == 2
    err = capsys.readouterr()
    assert err.out == "" and err.err.startswith("error: ")
    assert re.search(match, err.err), err.err


def test_the_module_runs_as_a_command():
    res = subprocess.run([sys.executable, "-m", "pipeline.spaces", "describe", "--space", "mobilenetv3",
                          "--arch", ARCH], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"arch: {ARCH}\n" in res.stdout and "flops_m: " in res.stdout
