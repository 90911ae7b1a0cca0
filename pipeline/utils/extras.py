"""Optional extras: a command whose extra is not installed says in one line which one to install."""
from __future__ import annotations

import importlib.util

from pipeline.errors import UserError

# package -> the pyproject extra that installs it
EXTRAS = {"ray": "sweep", "pandas": "sweep", "deepspeed": "distributed", "nats_bench": "benchmarks"}


def require(*packages: str, what: str) -> None:
    """UserError naming the extra to install when one of `packages` is not importable (nothing is imported)."""
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        extras = sorted({EXTRAS.get(p, p) for p in missing})
        raise UserError(f"{what} needs the optional package(s) {', '.join(missing)}: "
                        f"pip install -e '.[{','.join(extras)}]'")
