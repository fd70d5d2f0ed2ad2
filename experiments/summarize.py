"""Tables from experiments/run_all.py's JSON lines: mean ± sd over seeds, per run and variant.

    PYTHONPATH=. python experiments/summarize.py results.jsonl [--set val] [--runs a b ...] [--variants]
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np

METRICS = ("f1", "precision", "recall", "n_plus", "p_at_5", "map")


def load(path):
    return [json.loads(line) for line in open(path)]


def table(records, split="val", runs=None, variants=("projection",), best_variant=None):
    by_run = defaultdict(list)
    for r in records:
        by_run[r["run"]].append(r)
    lines = [f"| run | seeds | variant | " + " | ".join(METRICS) + " | best epoch | strength |",
             "|---|---:|---|" + "---:|" * (len(METRICS) + 2)]
    for run in runs or by_run:
        rs = by_run.get(run)
        if not rs:
            continue
        chosen = variants
        if best_variant:
            # the variant of this family with the best mean validation F1 (validation only)
            names = [v for v in rs[0]["figures"]["val"] if v.startswith(best_variant)] + ["projection"]
            chosen = [max(names, key=lambda v: np.mean([r["figures"]["val"][v]["f1"] for r in rs]))]
        for variant in chosen:
            cells = []
            for m in METRICS:
                values = np.array([r["figures"][split][variant][m] for r in rs], float)
                cells.append(f"{values.mean():.3f}±{values.std(ddof=1) if len(values) > 1 else 0:.3f}"
                             if m != "n_plus" else f"{values.mean():.1f}")
            epochs = "/".join(str(r["best_epoch"]) for r in rs)
            strengths = "/".join(f"{r['strength']:g}" for r in rs)
            lines.append(f"| {run} | {len(rs)} | {variant} | " + " | ".join(cells) + f" | {epochs} | {strengths} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--set", default="val")
    parser.add_argument("--runs", nargs="*")
    parser.add_argument("--best", default=None, help="variant family to pick on validation, e.g. hybrid_learned")
    parser.add_argument("--variants", nargs="*", default=["projection"])
    args = parser.parse_args()
    print(table(load(args.path), args.set, args.runs, args.variants, args.best))


if __name__ == "__main__":
    main()
