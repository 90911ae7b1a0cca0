"""The `search.*` keys: budget, rounds, evolution, constraints; and how a search config is loaded.

A search config is a run config (pipeline/config.py: data, space, model, train, ...) whose `search:` section
is this dataclass (`Config.search`); `load_search_config` loads it with the trainer's machinery and checks
the search keys against the run (budget, bounds, method). The dataclass imports only pipeline.settings, so
pipeline/config.py can import it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from pipeline.errors import ConfigError
from pipeline.settings import help_rows
from pipeline.settings import setting as _f

COST_BOUNDS = ("max_params", "min_params", "max_flops", "min_flops")


@dataclass
class SearchConfig:
    method: str = _f("hypernas", "hypernas = the run config's predictor (model.variant: np, hypernas_p, hypernas), "
                                 "retrained through the trainer every round; baselines under the same budget: "
                                 "random, evolution (regularized evolution, no predictor), rf (the random-forest "
                                 "predictor of pipeline.baselines on graph features).")
    oracle: str = _f("table", "Where labels come from (pipeline.search.oracle ORACLES): table = look "
                              "`data.train_label` up in `data.table`.")
    queries: int = _f(156, "Query budget: architectures whose `data.train_label` the oracle reveals.")
    initial: int = _f(30, "Initial random sample (unique isomorphism classes), the same for every method of a "
                          "seed; also regularized evolution's population size P (Real et al.).")
    per_round: int = _f(10, "Predictor methods: best unseen candidates queried per round (one retrain each); "
                            "random: queries per oracle call.")
    rounds: int = _f(0, "If > 0: spend the budget after the initial sample in this many rounds "
                        "(per_round = ceil((queries - initial) / rounds)); 0 = rounds of per_round.")
    population: int = _f(30, "Predictor methods: candidates the predictor-fitness evolution keeps per generation.")
    generations: int = _f(20, "Predictor methods: generations of the predictor-fitness evolution per round.")
    tournament: int = _f(10, "Tournament size of parent selection (regularized evolution: Real et al.'s sample "
                             "size S).")
    crossover: float = _f(0.5, "Predictor methods: probability that a child is the space's crossover of two "
                               "tournament winners (else a mutation of one).")
    retrain_epochs: int = _f(0, "Epochs of each retrain of the hypernas predictor (0 = train.epochs); the "
                                "cost of a search is about rounds x this x the time per epoch at the mean "
                                "number of queried cells (pipeline/search/__init__.py).")
    rf: dict = _f({}, "Settings of method rf's random forest (pipeline.baselines 'rf': n_estimators, "
                      "max_features, min_samples_leaf, features); {} = the baseline's defaults.")
    max_params: Optional[float] = _f(None, "Only architectures with space.cost params <= this (M); null = no bound.")
    min_params: Optional[float] = _f(None, "Only architectures with space.cost params >= this (M).")
    max_flops: Optional[float] = _f(None, "Only architectures with space.cost flops <= this (M).")
    min_flops: Optional[float] = _f(None, "Only architectures with space.cost flops >= this (M).")

    def queries_per_round(self) -> int:
        if self.rounds > 0:
            return max(1, math.ceil((self.queries - self.initial) / self.rounds))
        return self.per_round


def validate_search(s: SearchConfig, cfg) -> None:
    """Checks that need no data; each names its key. (Method names, constraints and labels are checked
    against the space and the table before the first query: pipeline/search/loop.py.)"""
    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise ConfigError(f"config key 'search.{key}': {msg}")

    from pipeline.search.methods import METHODS
    from pipeline.search.oracle import ORACLES
    METHODS.get(s.method)
    ORACLES.get(s.oracle)
    need(s.initial >= 2, "initial", f"must be >= 2 (a predictor needs two labels), got {s.initial}")
    need(s.queries >= s.initial, "queries",
         f"the budget search.queries={s.queries} is smaller than the initial sample search.initial={s.initial}")
    need(s.per_round >= 1, "per_round", f"must be >= 1, got {s.per_round}")
    need(s.rounds >= 0, "rounds", f"must be >= 0, got {s.rounds}")
    need(s.population >= 2, "population", f"must be >= 2, got {s.population}")
    need(s.generations >= 0, "generations", f"must be >= 0, got {s.generations}")
    need(s.tournament >= 1, "tournament", f"must be >= 1, got {s.tournament}")
    need(0.0 <= s.crossover <= 1.0, "crossover", f"must be in [0, 1], got {s.crossover}")
    need(s.retrain_epochs >= 0, "retrain_epochs", f"must be >= 0, got {s.retrain_epochs}")
    need(isinstance(s.rf, dict), "rf", f"must be a mapping, got {s.rf!r}")
    for key in COST_BOUNDS:
        v = getattr(s, key)
        need(v is None or v >= 0, key, f"must be >= 0 or null, got {v}")
    for what in ("params", "flops"):
        lo, hi = getattr(s, f"min_{what}"), getattr(s, f"max_{what}")
        need(lo is None or hi is None or lo <= hi, f"min_{what}",
             f"search.min_{what}={lo} exceeds search.max_{what}={hi}: no architecture can satisfy both")
    METHODS.get(s.method).check_config(s, cfg)


def load_search_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Any, SearchConfig]:
    """(run config, its search section) of a YAML file plus overrides, both validated."""
    from pipeline.config import load_config
    cfg = load_config(path, overrides)
    validate_search(cfg.search, cfg)
    return cfg, cfg.search


def search_tree(cfg, search: SearchConfig) -> dict[str, Any]:
    """The resolved config as one mapping (what config.yaml of a search run holds)."""
    tree = dataclasses.asdict(cfg)
    tree["search"] = dataclasses.asdict(search)
    return tree


def markdown_doc() -> str:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, typ, default, help in help_rows(SearchConfig, "search."):
        lines.append(f"| `{key}` | {typ} | `{default!r}` | {help} |")
    return "\n".join(lines) + "\n"
