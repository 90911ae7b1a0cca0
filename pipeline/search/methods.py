"""Search methods (registry `METHODS`, selected by `search.method`): what to query next.

Every method starts from the same initial sample (`initial_sample`: the first `search.initial`
isomorphism classes of a seeded random order of the proposable architectures) and then answers
`next_batch(round, k)` with up to k architectures of classes not yet queried:

  random     the next classes of that same random order (random search without replacement)
  evolution  regularized evolution (Real et al.): one mutation of a tournament winner per oracle call
  hypernas   the paper's loop: retrain the run config's predictor on everything queried, evolve
             candidates with it as fitness, query the k best predicted (pipeline/search/evolve.py)
  rf         the same loop with the random-forest baseline as the predictor

A round's randomness comes from (seed, round) alone, so a resumed search repeats an uninterrupted one.
"""
from __future__ import annotations

import random
from typing import Any, Hashable

from pipeline.errors import ConfigError
from pipeline.registry import Registry
from pipeline.search.evolve import evolve_round, regularized_evolution_step
from pipeline.search.fitness import ForestFitness, TrainerFitness

METHODS: Registry[type] = Registry("search method")


def round_rng(seed: int, what: str, round_: int = 0) -> random.Random:
    # a str seed is hashed with sha512 by random.Random: the same stream on every run and machine
    return random.Random(f"{seed}:{what}:{round_}")


def initial_sample(ctx) -> list[Hashable]:
    stream = ctx.cands.sample_stream(round_rng(ctx.seed, "sample"))
    return ctx.cands.fresh(stream, ctx.search.initial, set())


class Method:
    predictor = ""  # what the trajectory's `predicted` column holds

    def __init__(self, ctx):
        self.ctx = ctx

    @classmethod
    def check_config(cls, search, cfg) -> None:
        """Refuse a config this method cannot run, naming the key (before any work)."""

    @classmethod
    def label(cls, name: str, cfg) -> str:
        return name

    @classmethod
    def needs_images(cls, cfg) -> bool:
        """Whether training needs the aux images (prepared before the first query)."""
        return False

    def batch_size(self, remaining: int) -> int:
        return min(self.ctx.search.queries_per_round(), remaining)

    def next_batch(self, round_: int, k: int) -> tuple[list[Hashable], list[float] | None, dict[str, Any]]:
        raise NotImplementedError


@METHODS.register("random")
class RandomSearch(Method):
    def next_batch(self, round_, k):
        ctx = self.ctx
        stream = ctx.cands.sample_stream(round_rng(ctx.seed, "sample"))  # the initial sample's order, continued
        return ctx.cands.fresh(stream, k, set(ctx.traj.classes)), None, {}


@METHODS.register("evolution")
class RegularizedEvolution(Method):
    def batch_size(self, remaining: int) -> int:
        return 1  # each child is evaluated before the next tournament

    def next_batch(self, round_, k):
        ctx = self.ctx
        child = regularized_evolution_step(ctx.cands, ctx.traj.rows, ctx.search.initial, ctx.search.tournament,
                                           round_rng(ctx.seed, "evolution", round_))
        return ([child] if child is not None else []), None, {}


class PredictorSearch(Method):
    def make_fitness(self):
        raise NotImplementedError

    def __init__(self, ctx):
        super().__init__(ctx)
        self.fitness = self.make_fitness()

    def next_batch(self, round_, k):
        ctx = self.ctx
        info = self.fitness.fit(ctx.traj.rows, round_)
        ranked, evo = evolve_round(ctx.cands, self.fitness, ctx.traj.rows, ctx.search,
                                   round_rng(ctx.seed, "evolve", round_))
        picks = ranked[:k]
        archs, predicted = [a for a, _, _ in picks], [p for _, _, p in picks]
        if len(archs) < k:  # evolution found too few new classes: top up with random unseen ones, scored
            taken = set(ctx.traj.classes) | {c for _, c, _ in picks}
            extra = ctx.cands.fresh(ctx.cands.sample_stream(round_rng(ctx.seed, "topup", round_)), k - len(archs), taken)
            archs += extra
            predicted += [float(v) for v in (self.fitness.score(extra) if extra else [])]
            evo["topped_up"] = len(extra)
        return archs, predicted, {**info, **evo}


@METHODS.register("hypernas")
class PredictorFromConfig(PredictorSearch):
    """The run config's predictor (model.variant), trained by pipeline.train every round."""

    @classmethod
    def check_config(cls, search, cfg) -> None:
        from pipeline.baselines import BASELINES
        from pipeline.models.predictor import VARIANTS
        variant = cfg.model.variant
        if variant in BASELINES or not VARIANTS.get(variant).predict:
            raise ConfigError(f"config key 'model.variant': search.method=hypernas trains the run config's "
                              f"predictor, but {variant!r} has no accuracy regressor to score candidates with; "
                              f"use a predictor variant ({', '.join(n for n in VARIANTS.names() if VARIANTS.get(n).predict)})"
                              f"{' or search.method=rf' if variant == 'rf' else ''}")

    @classmethod
    def label(cls, name: str, cfg) -> str:
        return cfg.model.variant  # e.g. search-nb201-hypernas_p-q156-s0

    @classmethod
    def needs_images(cls, cfg) -> bool:
        from pipeline.models.predictor import VARIANTS
        return VARIANTS.get(cfg.model.variant).hyper

    @property
    def predictor(self) -> str:
        return self.ctx.cfg.model.variant

    def make_fitness(self):
        return TrainerFitness(self.ctx.cfg, self.ctx.search, self.ctx.space, self.ctx.run_dir)


@METHODS.register("rf")
class ForestSearch(PredictorSearch):
    predictor = "rf"

    @classmethod
    def check_config(cls, search, cfg) -> None:
        from pipeline.baselines import build_baseline
        try:
            build_baseline("rf", dict(search.rf))
        except ConfigError as e:
            raise ConfigError(str(e).replace("'model.baseline'", "'search.rf'")) from None

    def make_fitness(self):
        return ForestFitness(self.ctx.space, self.ctx.search.rf, self.ctx.seed)
