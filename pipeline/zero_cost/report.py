"""Rank correlations of proxy scores against label columns, and the Markdown report of a scoring run."""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from pipeline.metrics import kendall_tau, spearman


def correlations(scores: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """{proxy: {label: {spearman, kendall, n}}} over the rows where both values are finite."""
    out: dict[str, dict[str, Any]] = {}
    for name, s in scores.items():
        out[name] = {}
        for label, y in labels.items():
            ok = np.isfinite(s) & np.isfinite(y)
            if ok.sum() >= 2:
                out[name][label] = {"spearman": spearman(s[ok], y[ok]), "kendall": kendall_tau(s[ok], y[ok]),
                                    "n": int(ok.sum())}
            else:
                out[name][label] = {"spearman": math.nan, "kendall": math.nan, "n": int(ok.sum())}
    return out


def _f(x: Any, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown(report: Mapping[str, Any]) -> str:
    """The run's report: per proxy, Spearman / Kendall per label, cross-check, seconds per architecture."""
    labels = report["labels"]
    cross = report.get("crosscheck") or {}
    head = ["proxy"] + [f"{c} {lab}" for lab in labels for c in ("ρ", "τ")]
    if cross:
        head.append("ρ vs Suite-Zero")
    head += ["s/arch (own)", "s/arch (standalone)"]
    lines = [f"Zero-cost proxies on `{report['table']}`: {report['n']} architectures"
             f"{' (seeded sample, seed ' + str(report['sample_seed']) + ')' if report.get('sampled') else ''}; "
             f"seed {report['seed']}, batch {report['batch_size']} x {report['num_batches']} of "
             f"`{report['shards']}` ({report['split']} split, {report['image_size']}x{report['image_size']}), "
             f"device {report['device']}, {report['threads']} thread(s).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in report["proxies"].items():
        row = [name]
        for lab in labels:
            c = e["correlations"][lab]
            row += [_f(c["spearman"]), _f(c["kendall"])]
        if cross:
            row.append(_f(cross.get(name, {}).get("spearman")))
        row += [_f(e["seconds_per_arch"], 4), _f(e["standalone_seconds_per_arch"], 4)]
        lines.append("| " + " | ".join(row) + " |")
    shared = report.get("shared_seconds_per_arch") or {}
    lines += ["", "ρ = Spearman, τ = Kendall τ-b. Seconds are wall time per architecture: *own* is the proxy's "
              "own work; *standalone* adds the shared work it uses (what it costs run alone). Shared per "
              "architecture: " + ", ".join(f"{k} {v:.4f} s" for k, v in shared.items()) + "; total "
              f"{report['seconds_per_arch_total']:.3f} s per architecture."]
    bad = {k: v for k, v in report.get("nonfinite", {}).items() if v}
    if bad:
        lines.append("Non-finite scores (left out of the correlations): " +
                     ", ".join(f"{k}: {len(v)}" for k, v in bad.items()) + ".")
    if cross:
        lines.append(f"Cross-check: Spearman of our scores vs NAS-Bench-Suite-Zero's (`{report['crosscheck_reference']}`) "
                     f"over the {max(e['n'] for e in cross.values())} shared cells.")
    return "\n".join(lines) + "\n"
