"""Evolution: with a predictor as fitness (one round of the paper's loop), and Real et al.'s regularized
evolution, whose fitness is the oracle itself.

Predictor-fitness evolution, one round: the population starts as the best queried architectures (their
fitness: the queried label) topped up with random unseen ones (fitness: predicted). Each generation breeds
`population` children by tournament selection, the space's crossover (probability `crossover`) or
mutation; a child is kept only when `CandidateSpace.place` accepts it (proposable, and of a class neither
queried nor already scored this round), and is scored by the predictor. Survivors are the `population`
fittest of parents and children (the predictor is cheap, so elitism costs no queries); a generation that
can breed no new class ends the round early (rounds.json: generations_run). The round's candidates are
every architecture scored, best predicted first.

Regularized evolution: the population is the `P` most recently queried architectures (age-based
removal); a tournament of `S` picks the parent by queried label; its mutation is queried.
"""
from __future__ import annotations

import random
from typing import Any, Hashable, Sequence

import numpy as np

from pipeline.search.candidates import CandidateSpace
from pipeline.search.fitness import Fitness

_TRIES_PER_CHILD = 20  # draws per child slot before a generation gives up on filling it


def tournament(pop: Sequence[tuple[Hashable, float]], rng: random.Random, size: int) -> Hashable:
    contenders = rng.sample(range(len(pop)), min(size, len(pop)))
    return pop[max(contenders, key=lambda i: (pop[i][1], -i))][0]


def breed(space, pop: Sequence[tuple[Hashable, float]], rng: random.Random, tournament_size: int,
          crossover: float) -> Hashable:
    a = tournament(pop, rng, tournament_size)
    if rng.random() < crossover:
        child = space.crossover(a, tournament(pop, rng, tournament_size), rng)
        # a crossover of near-identical parents can return a parent: mutate it so the child is new
        return space.mutate(child, rng) if child == a else child
    return space.mutate(a, rng)


def evolve_round(cands: CandidateSpace, fitness: Fitness, queried: Sequence[Any], search, rng: random.Random,
                 ) -> tuple[list[tuple[Hashable, str, float]], dict[str, Any]]:
    """(candidates as (arch, iso class, predicted) best first, info) of one predictor-guided round."""
    space = cands.space
    seen = {q.iso for q in queried}          # classes never to propose again (queried, or scored this round)
    scored: list[tuple[Hashable, str, float]] = []

    def score(archs: list[Hashable]) -> list[tuple[Hashable, float]]:
        values = fitness.score(archs) if archs else np.zeros(0)
        scored.extend((a, cands.iso(a), float(v)) for a, v in zip(archs, values))
        return [(a, float(v)) for a, v in zip(archs, values)]

    best_queried = sorted(queried, key=lambda q: -q.label)[:search.population]
    pop = [(q.arch, q.label) for q in best_queried]
    fill = cands.fresh(cands.sample_stream(rng), search.population - len(pop), seen)
    pop += score(fill)
    generations = 0
    for _ in range(search.generations):
        children: list[Hashable] = []
        for _ in range(_TRIES_PER_CHILD * search.population):
            if len(children) == search.population:
                break
            child = cands.place(breed(space, pop, rng, search.tournament, search.crossover), seen)
            if child is not None:
                seen.add(cands.iso(child))
                children.append(child)
        if not children:  # the neighbourhood of the population is exhausted
            break
        generations += 1
        # stable sort: ties keep parents first, then children in birth order (deterministic)
        pop = sorted(pop + score(children), key=lambda p: -p[1])[:search.population]
    order = sorted(range(len(scored)), key=lambda i: (-scored[i][2], i))
    queried_classes = {q.iso for q in queried}
    unqueried_survivors = sum(cands.iso(a) not in queried_classes for a, _ in pop)
    return [scored[i] for i in order], {"scored": len(scored), "generations_run": generations,
                                        "unqueried_in_final_population": unqueried_survivors}


def regularized_evolution_step(cands: CandidateSpace, queried: Sequence[Any], population: int, sample_size: int,
                               rng: random.Random) -> Hashable:
    """The next architecture regularized evolution queries (a mutation of a tournament winner among the
    `population` newest queries), or a random unseen one when 100 mutations in a row were not new."""
    pop = [(q.arch, q.label) for q in queried[-population:]]
    taken = {q.iso for q in queried}
    for _ in range(100):
        child = cands.place(cands.space.mutate(tournament(pop, rng, sample_size), rng), taken)
        if child is not None:
            return child
    fresh = cands.fresh(cands.sample_stream(rng), 1, set(taken))
    return fresh[0] if fresh else None
