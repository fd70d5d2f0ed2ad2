"""The sampling comparison's report: per-run records -> one row per variant, Markdown, a plot.

Pure functions (nothing here reads a run root or trains); pipeline/compare.py makes the records,
one per (variant, seed) run::

    {"variant": str, "seed": int, "overrides": {config key: value},
     "validation": {"f1": per-tag F1 at 5 of the exported (best) epoch on the validation images the
                    trainer selects on (at most validation_user_cap per user), "p_at_5", "r_at_5",
                    "best_epoch", "epochs_trained"},
     "test": evaluate's im2vec figures: {"precision", "recall", "f1", "n_plus", "tags", "p_at_5", "r_at_5",
             "map", "map_random", ...},
     "zero_shot": {"f1", "map", "map_random", ...} or None (no tag held out),
     "baselines": {"popularity": {...}, "knn": {...}} (test; the same in every run),
     "cost": {"sample_seconds_per_epoch", "bytes_per_epoch", "examples_per_second", ...},
     "sizes": evaluate's sizes ({"test_images", ...})}

Validation chooses, test reports: the winner is the variant with the highest mean validation per-tag F1
(among those with the most seeds, so a variant is not chosen on fewer runs than the others); the test
figures stand beside it and are never used to choose. Spread is the sample standard deviation over
seeds (None with one seed).
"""
from __future__ import annotations

import io
import json

import numpy as np

TEST = ("precision", "recall", "f1", "n_plus", "p_at_5", "map")   # per-tag P/R/F1/N+, per-image P@5, mAP
ZERO_SHOT = ("f1", "map")
COST = ("sample_seconds_per_epoch", "bytes_per_epoch", "examples_per_second")
SELECTION = ("validation per-tag F1 at 5 of the exported (best) epoch, on the trainer's validation images "
             "(at most validation_user_cap per user); mean over seeds, the highest wins")


def mean_sd(values) -> dict:
    """``{"mean", "sd", "n"}`` of the numbers among ``values`` (None is skipped).

    ``mean`` is None without a number; ``sd`` is the sample standard deviation (n - 1), None below two.
    """
    numbers = np.array([v for v in values if v is not None], dtype=np.float64)
    return {"mean": float(numbers.mean()) if len(numbers) else None,
            "sd": float(numbers.std(ddof=1)) if len(numbers) > 1 else None, "n": int(len(numbers))}


def rows(records: list[dict], order: list[str] | None = None) -> list[dict]:
    """One row per variant from its runs' records.

    Args:
        records: per-run records (module docstring), any order.
        order: variant names, the rows' order; variants not in it follow in order of first appearance.

    Returns:
        Dicts: ``variant``, ``overrides``, ``seeds`` (sorted), ``validation_f1`` and ``best_epochs``
        (per seed, in seed order), ``test`` {TEST metric: mean_sd}, ``zero_shot`` {"f1", "map": mean_sd},
        ``cost`` {COST key: mean_sd}, ``wins_on_validation`` (True for one row: :func:`winner`) and
        ``behind_winner`` (winner's mean validation F1 minus this one's).
    """
    names = list(dict.fromkeys([*(order or []), *(r["variant"] for r in records)]))
    table = []
    for name in names:
        runs = sorted((r for r in records if r["variant"] == name), key=lambda r: r["seed"])
        if not runs:
            continue
        zero = [r.get("zero_shot") or {} for r in runs]
        table.append({
            "variant": name, "overrides": runs[0].get("overrides", {}), "seeds": [r["seed"] for r in runs],
            "validation_f1": mean_sd(r["validation"].get("f1") for r in runs),
            "best_epochs": [r["validation"].get("best_epoch") for r in runs],
            "test": {key: mean_sd(r["test"].get(key) for r in runs) for key in TEST},
            "zero_shot": {key: mean_sd(z.get(key) for z in zero) for key in ZERO_SHOT},
            "cost": {key: mean_sd(r["cost"].get(key) for r in runs) for key in COST},
        })
    best = winner(table)
    for row in table:
        row["wins_on_validation"] = row["variant"] == best
        mean = row["validation_f1"]["mean"]
        row["behind_winner"] = None if best is None or mean is None else \
            next(r["validation_f1"]["mean"] for r in table if r["variant"] == best) - mean
    return table


def winner(table: list[dict]) -> str | None:
    """The variant with the highest mean validation per-tag F1 among the rows with the most seeds
    (the earlier row of equals); None when no row has a validation figure."""
    scored = [row for row in table if row["validation_f1"]["mean"] is not None]
    if not scored:
        return None
    most = max(len(row["seeds"]) for row in scored)
    eligible = [row for row in scored if len(row["seeds"]) == most]
    return max(eligible, key=lambda row: row["validation_f1"]["mean"])["variant"]


def report(records: list[dict], order: list[str] | None = None) -> dict:
    """sampling.json's object: ``selection`` (how the winner is chosen), ``winner``, ``runner_up``,
    ``margin`` (their mean validation F1 difference), ``variants`` (:func:`rows`), ``baselines``
    (popularity and knn on test, from the first record), ``sizes`` and ``runs`` (the records)."""
    table = rows(records, order)
    best = winner(table)
    others = [row for row in table if row["variant"] != best and row["validation_f1"]["mean"] is not None]
    runner_up = max(others, key=lambda row: row["validation_f1"]["mean"])["variant"] if best and others else None
    first = records[0] if records else {}
    return {"selection": SELECTION, "winner": best, "runner_up": runner_up,
            "margin": next((row["behind_winner"] for row in table if row["variant"] == runner_up), None),
            "variants": table, "baselines": first.get("baselines", {}), "sizes": first.get("sizes", {}),
            "runs": records}


def cell(stats: dict, digits: int = 3, scale: float = 1.0) -> str:
    """``"0.151 ± 0.004"`` from a :func:`mean_sd` dict (values times ``scale``); ``"0.151"`` with one seed;
    "–" with none."""
    if stats["mean"] is None:
        return "–"
    text = f"{stats['mean'] * scale:,.{digits}f}"
    return text if stats["sd"] is None else f"{text} ± {stats['sd'] * scale:,.{digits}f}"


def _number(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(result: dict) -> str:
    """sampling.md from :func:`report`'s object: the quality table (validation chooses, test reports),
    the cost table, and what the figures are."""
    table, sizes, baselines = result["variants"], result["sizes"], result["baselines"]
    images = sizes.get("test_images")
    lines = ["## Sampling methods compared" + (f" on {images:,} test images" if images is not None else ""), "",
             "| variant | config | seeds | **validation per-tag F1** (chooses) | best epochs | test precision | "
             "test recall | test F1 | test N+ | test P@5 | test mAP | zero-shot F1 | zero-shot mAP |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in table:
        name = f"**{row['variant']}** (wins on validation)" if row["wins_on_validation"] else row["variant"]
        test = row["test"]
        overrides = json.dumps(row["overrides"], sort_keys=True) if row["overrides"] else "as configured"
        lines.append(f"| {name} | {overrides} | {len(row['seeds'])} | {cell(row['validation_f1'])} | "
                     f"{'/'.join('–' if e is None else str(e) for e in row['best_epochs'])} | "
                     + " | ".join(cell(test[key], 1 if key == "n_plus" else 3) for key in TEST)
                     + f" | {cell(row['zero_shot']['f1'])} | {cell(row['zero_shot']['map'])} |")
    for name in ("popularity", "knn"):
        figures = baselines.get(name)
        if figures:
            lines.append(f"| {name} (baseline) | | | – | | " + " | ".join(
                _number(figures.get(key), 0 if key == "n_plus" else 3) for key in TEST) + " | | |")
    lines += ["", "| variant | sample s/epoch | MB/epoch | train examples/s |", "|---|---:|---:|---:|"]
    for row in table:
        cost = row["cost"]
        lines.append(f"| {row['variant']} | {cell(cost['sample_seconds_per_epoch'], 1)} | "
                     f"{cell(cost['bytes_per_epoch'], 1, 1e-6)} | {cell(cost['examples_per_second'], 0)} |")
    lines += ["", *notes(result)]
    return "\n".join(lines) + "\n"


def notes(result: dict) -> list[str]:
    """The lines under the tables: the winner and by how much, and what the figures are."""
    table = {row["variant"]: row for row in result["variants"]}
    lines = []
    if result["winner"]:
        best = table[result["winner"]]
        line = (f"Wins on validation: **{best['variant']}**, per-tag F1 {cell(best['validation_f1'])} over "
                f"{len(best['seeds'])} seed(s)")
        if result["runner_up"]:
            second = table[result["runner_up"]]
            line += (f", {result['margin']:.3f} above the runner-up {second['variant']} "
                     f"({cell(second['validation_f1'])})")
        lines.append(line + ".")
    zero_random = [r["zero_shot"].get("map_random") for r in result["runs"] if r.get("zero_shot")]
    test_random = [r["test"].get("map_random") for r in result["runs"]]
    lines.append(
        "Mean ± sample standard deviation over seeds. Chosen by " + result["selection"] + "; the test figures "
        "(`im2vec evaluate`'s im2vec row, the same test images for every run) are reported, never used to "
        "choose. Per-tag precision, recall, F1 and N+ at 5; P@5 per image; mAP over word queries (random "
        f"ranking: {_number(mean_sd(test_random)['mean'])}; zero-shot {_number(mean_sd(zero_random)['mean'])}). "
        "Cost: the sample stage's seconds and bytes per epoch (its epochs' manifests), the trainer's "
        "examples per second (rows trained / training seconds, validation excluded).")
    return lines


def plot(result: dict) -> bytes:
    """sampling.png: per variant, validation per-tag F1 (the winner highlighted), test per-tag F1 and mAP
    (knn's as dashed lines), sample seconds per epoch and training examples per second; bars are means,
    whiskers one sd."""
    from matplotlib.figure import Figure   # the Agg canvas, no display and no pyplot state

    table = result["variants"]
    names = [row["variant"] for row in table]
    y = np.arange(len(table))
    figure = Figure(figsize=(17, 1.6 + 0.4 * max(len(table), 1)), layout="constrained")
    validation, test, sample, train = figure.subplots(1, 4, sharey=True)

    def bars(axes, stats: list[dict], offset=0.0, height=0.8, scale=1.0, **style):
        means = [np.nan if s["mean"] is None else s["mean"] * scale for s in stats]
        spread = [0.0 if s["sd"] is None else s["sd"] * scale for s in stats]
        axes.barh(y + offset, means, height=height, xerr=spread, capsize=2, **style)

    bars(validation, [row["validation_f1"] for row in table],
         color=["C3" if row["wins_on_validation"] else "C0" for row in table])
    validation.set(title="validation per-tag F1 (chooses)", yticks=y, yticklabels=names)
    bars(test, [row["test"]["f1"] for row in table], -0.2, 0.4, color="C0", label="per-tag F1")
    bars(test, [row["test"]["map"] for row in table], 0.2, 0.4, color="C2", label="mAP")
    knn = result["baselines"].get("knn") or {}
    for key, color in (("f1", "C0"), ("map", "C2")):
        if knn.get(key) is not None:
            test.axvline(knn[key], color=color, linestyle="--", label=f"knn {'per-tag F1' if key == 'f1' else key}")
    test.set(title="test (reported, not used to choose)")
    test.legend(fontsize=7)
    bars(sample, [row["cost"]["sample_seconds_per_epoch"] for row in table], color="C1")
    sample.set(title="sample stage: seconds per epoch")
    bars(train, [row["cost"]["examples_per_second"] for row in table], color="C4")
    train.set(title="training examples per second")
    for axes in (validation, test, sample, train):
        axes.grid(axis="x", alpha=0.3)
    validation.invert_yaxis()    # the first variant on top (the axes share y)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()
