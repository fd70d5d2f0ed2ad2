"""The tables of the research notes from run_all.py's JSON lines (validation chooses, test reports).

    PYTHONPATH=. python experiments/report.py --sampling a.jsonl b.jsonl --final final.jsonl --baselines a.jsonl.baselines.json
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np

SAMPLING_ORDER = ["default", "np0", "np1", "np075_noexcl", "np1_noexcl", "presampled_logq", "option1", "in_batch",
                  "in_batch_logq", "mixed", "mixed_logq", "uniform_pos", "full", "full_uniform_pos"]
LABELS = {
    "default": "Option II, neg_power 0.75, own tags excluded, positives by pos_weight (today)",
    "np0": "Option II, neg_power 0 (uniform)", "np1": "Option II, neg_power 1 (raw frequency)",
    "np075_noexcl": "Option II, 0.75, own tags not excluded",
    "np1_noexcl": "Option II, 1, not excluded (the research code)",
    "presampled_logq": "Option II, 0.75, with log-Q correction",
    "option1": "Option I: next image's tags minus own", "in_batch": "in-batch negatives",
    "in_batch_logq": "in-batch + log-Q correction", "mixed": "mixed: pre-sampled + in-batch",
    "mixed_logq": "mixed + log-Q correction", "uniform_pos": "Option II default, positives uniform",
    "full": "full softmax over all 327 tags (reference)", "full_uniform_pos": "full softmax, positives uniform",
}


def load(paths):
    records = []
    for path in paths:
        records += [json.loads(line) for line in open(path)]
    by_run = defaultdict(list)
    for r in records:
        by_run[r["run"]].append(r)
    return by_run


def cell(values, digits=3):
    values = np.asarray(values, float)
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1) if len(values) > 1 else 0:.{digits}f}"


def sampling_table(by_run):
    lines = ["| sampling | seeds | per-tag F1 | P@5 | mAP | N+ | best epochs | tag_bias_strength chosen |",
             "|---|---:|---:|---:|---:|---:|---|---|"]
    for run in SAMPLING_ORDER:
        rs = by_run.get(run)
        if not rs:
            continue
        f = [r["figures"]["val"]["projection"] for r in rs]
        epochs = "/".join(str(r["best_epoch"]) for r in rs)
        strengths = "/".join(f"{r['strength']:g}" for r in rs)
        lines.append(f"| {LABELS[run]} | {len(rs)} | {cell([x['f1'] for x in f])} | {cell([x['p_at_5'] for x in f])} | "
                     f"{cell([x['map'] for x in f])} | {np.mean([x['n_plus'] for x in f]):.1f} | {epochs} | {strengths} |")
    return "\n".join(lines)


def families(names):
    out = defaultdict(list)
    for name in names:
        if name in ("projection", "prob"):
            out[name].append(name)
        else:
            out[name.rsplit("_", 1)[0] if "+" not in name else "conse_far+" + name.split("+")[1].rsplit("_", 1)[0]].append(name)
    return out


def tagger_table(rs, split="val"):
    """Per family of post-hoc taggers: the weight with the best mean validation F1, its figures on ``split``."""
    names = list(rs[0]["figures"]["val"])
    lines = ["| tagger (weight chosen on validation) | per-tag F1 | P@5 | mAP | N+ |", "|---|---:|---:|---:|---:|"]
    for family, members in families(names).items():
        best = max(members, key=lambda v: np.mean([r["figures"]["val"][v]["f1"] for r in rs]))
        f = [r["figures"][split][best] for r in rs]
        lines.append(f"| {best} | {cell([x['f1'] for x in f])} | {cell([x['p_at_5'] for x in f])} | "
                     f"{cell([x['map'] for x in f])} | {np.mean([x['n_plus'] for x in f]):.1f} |")
    return "\n".join(lines)


def chosen_test(rs, variant, baselines, split):
    lines = ["| method | per-tag P | per-tag R | per-tag F1 | N+ | P@5 | mAP |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name in ("projection", variant):
        f = [r["figures"][split][name] for r in rs]
        lines.append(f"| im2vec: {name} (3 seeds) | {cell([x['precision'] for x in f])} | {cell([x['recall'] for x in f])} | "
                     f"{cell([x['f1'] for x in f])} | {np.mean([x['n_plus'] for x in f]):.1f} | "
                     f"{cell([x['p_at_5'] for x in f])} | {cell([x['map'] for x in f])} |")
    for name in ("knn", "popularity"):
        b = baselines[split][name]
        lines.append(f"| {name} | {b['precision']:.3f} | {b['recall']:.3f} | {b['f1']:.3f} | {b['n_plus']} | "
                     f"{b['p_at_5']:.3f} | {b['map']:.3f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sampling", nargs="+", required=True)
    parser.add_argument("--final", required=True)
    parser.add_argument("--baselines", required=True)
    parser.add_argument("--variant", default=None)
    args = parser.parse_args()
    print("### Sampling (validation, capped, mean ± sd over seeds 1-3)\n")
    print(sampling_table(load(args.sampling)))
    final = load([args.final])["default"]
    print("\n### Taggers on top of the default model (validation)\n")
    print(tagger_table(final))
    baselines = json.load(open(args.baselines))
    if args.variant:
        for split in ("test", "test_capped"):
            print(f"\n### {split}\n")
            print(chosen_test(final, args.variant, baselines, split))
        zero = [r["figures"]["zero_shot"] for r in final]
        print(f"\nzero-shot on test: mAP {cell([z['map'] for z in zero])} vs random {zero[0]['map_random']:.4f}; "
              f"F1 {cell([z['f1'] for z in zero])}")


if __name__ == "__main__":
    main()
