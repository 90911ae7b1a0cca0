"""`python -m pipeline.spaces`: look at architectures of any registered space.

    python -m pipeline.spaces describe --space mobilenetv3 --arch 'k3e4-k5e6|...' [--set key=value ...]
    python -m pipeline.spaces list

`describe` prints one `key: value` a line: `space`, `arch` (the canonical string), `iso_class`, then the
space's cost() entries, params and flops as `params_m` / `flops_m` (millions). `--set` applies space
settings (values parsed as YAML, checked against the space's Settings like the run config's
`space.settings`). Bad architecture or setting: `error: ...` and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

import yaml

from pipeline.errors import ConfigError, UserError
from pipeline.settings import build, help_rows
from pipeline.spaces import SPACES, SearchSpace

_MILLIONS = {"params": "params_m", "flops": "flops_m"}


def parse_settings(pairs: Sequence[str]) -> dict:
    """`key=value` pairs -> a settings mapping (values parsed as YAML: `0.5` a float, `true` a bool)."""
    values = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value")
        try:
            values[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {pair!r}: value is not valid YAML ({e})") from None
    return values


def space_with_settings(name: str, pairs: Sequence[str] = ()) -> SearchSpace:
    """The registered space `name` with `key=value` settings applied (ConfigError naming a bad key)."""
    cls = SPACES.get(name)
    return cls(build(cls.Settings, parse_settings(pairs), "space.settings."))


def describe(space: SearchSpace, text: str) -> list[tuple[str, str]]:
    arch = space.parse(text)
    rows = [("space", space.name), ("arch", space.to_str(arch)), ("iso_class", space.isomorphism_class(arch))]
    for key, value in space.cost(arch).items():
        rows.append((_MILLIONS.get(key, key), f"{value:.4f}" if isinstance(value, float) else str(value)))
    return rows


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.spaces", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("describe", help="canonical string and cost of one architecture")
    d.add_argument("--space", required=True, help=f"one of: {', '.join(SPACES.names())}")
    d.add_argument("--arch", required=True, help="an architecture in any form the space parses")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a space setting (repeatable)")
    ls = sub.add_parser("list", help="the registered spaces and their settings")
    ls.add_argument("--space", default=None, help="only this space")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "describe":
            for key, value in describe(space_with_settings(args.space, args.set), args.arch):
                print(f"{key}: {value}")
        else:
            for name in [args.space] if args.space else SPACES.names():
                print(name)
                for key, typ, default, help_text in help_rows(SPACES.get(name).Settings):
                    print(f"  {key} ({typ}, default {default!r}): {help_text}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
