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
    assert (cfg.train.epochs, cfg.model.hyper.images_per_arch, cfg.model.hyper.target_channels,
            cfg.model.hyper.target_cells_per_stage, cfg.train.accumulate, cfg.loss.q) == (200, 128, 16, 5, 10, 1.5)
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
    ("model.variant=hypernas_x", "unknown predictor variant 'hypernas_x'"),
    ("space.name=nb999", "unknown search space 'nb999'"),
    ("loss.weighting=magic", "unknown loss weighting 'magic'"),
    ("model.encoder.connectivity=product", "'model.encoder.connectivity'"),
    ("train.epochs", "key=value"),
])
def test_bad_config_names_the_key(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(REPO / "configs" / "nb201_cpu.yaml", [override])
    assert fragment in str(e.value)
