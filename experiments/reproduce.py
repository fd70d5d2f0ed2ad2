"""Check: the harness's default setting against the real trainer's validation per-tag F1 (uncapped, strength 0.5).

    PYTHONPATH=. python experiments/reproduce.py --root /data/demo --seed 13
prints both per epoch (the trainer's from ROOT/model/progress.json, written by `im2vec train`).
"""
import argparse
import json
import sys

import numpy as np

sys.path.insert(0, ".")
from experiments import harness  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--root", required=True)
parser.add_argument("--seed", type=int, default=13)
args = parser.parse_args()
harness.limit_threads(1)
corpus = harness.load_corpus(args.root)
result = harness.train(corpus, harness.Method(), args.seed, corpus.splits["validation"])
trainer = {h["epoch"]: h["val_f1"] for h in json.load(open(f"{args.root}/model/progress.json"))["history"]}
ours = {h["epoch"]: h["val_f1_by_strength"][0.5] for h in result["history"]}
for epoch in sorted(ours):
    print(f"epoch {epoch}: harness {ours[epoch]:.4f} trainer {trainer.get(epoch, float('nan')):.4f}")
for lo, hi in ((1, 20), (10, 20)):
    a = [ours[e] for e in range(lo, hi + 1)]
    b = [trainer[e] for e in range(lo, hi + 1) if e in trainer]
    print(f"epochs {lo}-{hi}: harness {np.mean(a):.4f}±{np.std(a):.4f} trainer {np.mean(b):.4f}±{np.std(b):.4f}")
