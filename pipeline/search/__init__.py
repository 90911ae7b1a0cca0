"""Predictor-guided architecture search under a query budget (METHOD.md §8), with its baselines.

    python -m pipeline.search --config configs/search/nb201_cpu.yaml [key=value ...]
    python -m pipeline.search --config configs/nb201_cpu.yaml search.method=rf search.queries=156 train.seed=1
    python -m pipeline.search --doc                      # the search.* keys

The paper's loop (method `hypernas`, the run config's predictor): query an initial sample (unique
isomorphism classes), train the predictor on every queried architecture through the one trainer, evolve
candidates with the predictor as fitness (the space's mutate / crossover, tournament selection; never an
isomorphic duplicate of a queried architecture), query the best unseen ones, retrain, repeat until the
budget is spent. Baselines under the same budget and seed: `random`, `evolution` (regularized evolution,
no predictor) and `rf` (the same loop with the random-forest predictor). Cost bounds
(`search.max_params` ...) filter every proposal; an unsatisfiable one is an error before any query.

Labels come from an oracle (pipeline/search/oracle.py; the default looks `data.train_label` up in
`data.table`); `data.eval_label` is read only at the end, for the report. A killed search continues
where it stopped when the same command is run again (pipeline/search/trajectory.py). The last line
printed is `best <eval_label> X after N queries`.

Outputs (`run.root/run.name`, default `search-<space>-<method>-q<queries>-s<seed>`): search.json,
trajectory.parquet, best_so_far.png, rounds.json, config.yaml, env.json (pipeline/search/loop.py).
`run.resume=false` starts the run directory over.

Cost (measured on the shared 2-core CPU, NB201, 156 queries, 30 initial, 10 per round = 13 retrains; wall
time of one `python -m pipeline.search` process, ~4 s of it imports): random / evolution 4-12 s, rf
18-45 s (500 trees), hypernas with the CPU profile (configs/search/nb201_cpu.yaml) and
search.retrain_epochs=3: 86-100 s. A retrain costs ~1 s of setup plus ~0.02 s per queried cell per epoch
(3 s per epoch at 150 cells), so the config's 200 epochs come to ~1.3 h per seed (extrapolated from
those rounds, not measured); choose search.retrain_epochs / search.rounds to fit.

Modules: config.py (search.* keys), oracle.py, candidates.py (pool, constraints, isomorphism),
trajectory.py (the queried set), fitness.py (predictors), evolve.py, methods.py (registry), loop.py,
report.py.
"""
from pipeline.search.config import SearchConfig, load_search_config
from pipeline.search.loop import run_search
from pipeline.search.methods import METHODS
from pipeline.search.oracle import Oracle, TableOracle

__all__ = ["SearchConfig", "load_search_config", "run_search", "METHODS", "Oracle", "TableOracle"]
