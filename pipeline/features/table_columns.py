"""Feature sets from the architecture's cost and from zero-cost proxy columns of its table."""
from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np

from pipeline.errors import DataError
from pipeline.features import FeatureBlock, register_feature_set

ZC_PREFIX = "zc_"


@register_feature_set("cost")
def cost_features(space, archs: Sequence[Hashable], table=None) -> FeatureBlock:
    """log params and log FLOPs of the benchmark network (`space.cost`): scale-free, like their ranks."""
    costs = [space.cost(a) for a in archs]
    values = np.log(np.maximum(np.array([[c["params"], c["flops"]] for c in costs], dtype=np.float64), 1e-9))
    return FeatureBlock(["log_params", "log_flops"], values)


@register_feature_set("zc")
def zero_cost_features(space, archs: Sequence[Hashable], table=None) -> FeatureBlock:
    """The table's `zc_<proxy>` columns for these architectures (looked up by canonical string), as
    sign-preserving log(1 + |x|) (proxies span many orders of magnitude)."""
    if table is None:
        raise DataError("feature set 'zc' reads the zc_* columns of the run's table; these architectures come "
                        "from no table")
    cols = sorted(c for c in table.columns if c.startswith(ZC_PREFIX))
    if not cols:
        raise DataError(f"feature set 'zc': table {table.path} has no zc_* columns; add them with "
                        f"`python -m pipeline.zero_cost --config CONFIG --proxies synflow,nwot,... --unique --out "
                        f"NEW_TABLE.parquet` and train on NEW_TABLE")
    rows = table.rows([space.to_str(a) for a in archs])
    values = np.stack([np.asarray(table.columns[c], dtype=np.float64)[rows] for c in cols], axis=1)
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"feature set 'zc': column {cols[c]!r} of {table.path} has {int(bad.sum())} missing or "
                        f"non-finite values (first at row {int(rows[r])}, arch {table.archs[rows[r]]!r})")
    return FeatureBlock(cols, np.sign(values) * np.log1p(np.abs(values)))
