"""Config: every key documented, unknown keys rejected, overrides typed, shipped configs valid."""
from pathlib import Path

import pytest

from pipeline.config import Config, iter_keys, load_config, markdown_doc, replace
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_every_key_has_a_help_text():
    missing = [key for key, _, _, help in iter_keys() if not help.strip()]
    assert not missing, missing


def test_configs_readme_is_generated_from_the_code():
    assert (REPO / "configs" / "README.md").read_text() == markdown_doc(), "run `just docs`"


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    assert isinstance(load_config(path), Config)


def test_paper_profile_is_the_paper_recipe():
    cfg = load_config(REPO / "configs" / "nb201.yaml")
    assert (cfg.train.epochs, cfg.model.hyper.images_per_arch, cfg.space.settings["target_channels"],
            cfg.space.settings["target_cells_per_stage"], cfg.train.accumulate, cfg.loss.q) == (200, 128, 16, 5, 10, 1.5)
    assert (cfg.model.encoder.layers, cfg.model.encoder.hidden, cfg.model.hyper.layers, cfg.model.hyper.hidden) == (6, 72, 3, 96)


def test_overrides_are_typed_and_nested():
    cfg = load_config(REPO / "configs" / "nb201_cpu.yaml",
                      ["train.epochs=5", "loss.q=2", "train.lr_milestones=[0.3, 0.6]", "model.encoder.connectivity=concat",
                       "loss.detach_power=null", "data.train_label=cifar100_valid_val_200ep"])
    assert cfg.train.epochs == 5 and cfg.loss.q == 2.0 and cfg.train.lr_milestones == [0.3, 0.6]
    assert cfg.model.encoder.connectivity == "concat" and cfg.loss.detach_power is None
    assert cfg.data.train_label == "cifar100_valid_val_200ep"
    assert replace(cfg, "train.seed=3").train.seed == 3


@pytest.mark.parametrize("override, fragment", [
    ("train.epoch=5", "unknown config key 'train.epoch' (did you mean 'epochs'?)"),
    ("nope.x=1", "unknown config key 'nope'"),
    ("train.epochs=five", "'train.epochs' must be an integer"),
    ("train.epochs=0", "'train.epochs': must be >= 1"),
    ("model.variant=hypernas_x", "'model.variant': unknown 'hypernas_x'; predictor variants: hypernas, hypernas_h"),
    ("space.name=nb999", "unknown search space 'nb999'"),
    ("loss.weighting=magic", "unknown loss weighting 'magic'"),
    ("model.encoder.connectivity=product", "'model.encoder.connectivity'"),
    ("train.epochs", "key=value"),
    ("space.settings.target_channel=8", "unknown config key 'space.settings.target_channel' (did you mean 'target_channels'?)"),
    ("space.settings.target_channels=0", "'space.settings.target_channels': must be >= 1"),
    ("space.settings.prune=maybe", "'space.settings.prune' must be true/false"),
])
def test_bad_config_names_the_key(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(REPO / "configs" / "nb201_cpu.yaml", [override])
    assert fragment in str(e.value)


def test_space_settings_are_filled_with_their_defaults():
    cfg = load_config(REPO / "configs" / "nb201_cpu.yaml")
    assert cfg.space.settings == {"cells_per_stage": 5, "prune": True, "target_channels": 8,
                                  "target_cells_per_stage": 1, "batched_targets": False, "benchmark_classes": 10}


def test_a_missing_optional_extra_is_named_in_one_line(monkeypatch, capsys):
    import importlib.util

    from pipeline import sweep
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    assert sweep.main([str(REPO / "configs" / "sweeps" / "tiny.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: python -m pipeline.sweep needs the optional package(s) ray: pip install -e '.[sweep]'"]
