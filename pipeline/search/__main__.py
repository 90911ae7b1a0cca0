"""`python -m pipeline.search --config CONFIG [key=value ...]` (see pipeline/search/__init__.py)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "search" / "nb201_cpu.yaml"


def main(argv: list[str] | None = None) -> int:
    from pipeline import search as package
    parser = argparse.ArgumentParser(prog="python -m pipeline.search", description=package.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                        help="YAML run config, optionally with a `search:` section (default: %(default)s)")
    parser.add_argument("--doc", action="store_true", help="print the search.* keys as a markdown table and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="also log the trainer's per-epoch lines")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. search.method=rf train.seed=1")
    args = parser.parse_args(argv)
    from pipeline.distributed import EXIT_PREEMPTED
    from pipeline.errors import UserError
    from pipeline.search.config import load_search_config, markdown_doc
    from pipeline.search.fitness import SearchPreempted
    from pipeline.search.loop import run_search

    if args.doc:
        print(markdown_doc(), end="")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if not args.verbose:  # a search retrains many times: one line per round, not per epoch
        for name in ("hypernas.train", "hypernas.data", "hypernas.distributed"):
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        cfg, search = load_search_config(args.config, args.overrides)
        summary = run_search(cfg, search)
    except SearchPreempted as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_PREEMPTED
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"best architecture {summary['best_arch']} ({summary['train_label']} {summary['best_train_label']:.4f}, "
          f"query {summary['best_found_at']})")
    print(f"run directory: {summary['run_dir']}")
    if summary["best_eval"] is None:  # an oracle without the eval label: the queried one is all there is
        print(f"best {summary['train_label']} {summary['best_train_label']:.4f} after {summary['queries_used']} queries")
    else:
        print(f"best {summary['eval_label']} {summary['best_eval']:.4f} after {summary['queries_used']} queries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
