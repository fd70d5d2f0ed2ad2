"""The evaluate stage's report: the Markdown table and the two plots, from evaluation.json's object.

Nothing here reads the run root or computes a metric: :func:`markdown` and :func:`plot_curves` take
the report (model/evaluate.py, one object per method from :func:`model.metrics.summary`), and
:func:`plot_examples` the images and tags the stage read.
"""
from __future__ import annotations

import io
import json

import numpy as np

from model.metrics import TOP_K

METHODS = ("im2vec", "popularity", "knn", "zero_shot")   # one row (and line) each, in this order
EXAMPLES = 8             # test images in the example grid


def _number(value, digits: int = 3) -> str:
    return "–" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def markdown(report: dict) -> str:
    """evaluation.md: one table row per method, then what the numbers are over."""
    sizes = report["sizes"]
    lines = [f"## Evaluation at k={TOP_K} on {sizes['test_images']:,} test images", "", *table(report)]
    lines += ["", f"Precision, recall, F1 and N+ are per tag (averaged over the {report['im2vec']['tags']:,} "
              f"vocabulary tags with a relevant test image; N+ = tags recalled at least once); P@5/R@5 per image; "
              f"mAP over word queries: each tag ranks the test images, im2vec's by p(tag | image), the probability "
              f"it tags with, knn's by its votes (random ranking: im2vec {_number(report['im2vec']['map_random'])}; "
              f"im2vec with the images ranked by cosine(g(f), v_t), as `im2vec search` ranks them: "
              f"{_number(report['im2vec'].get('map_by_cosine'))}). "
              f"knn: {report['knn']['k']} nearest of {sizes['train_images']:,} training images. "
              f"Model: {json.dumps(report['model'])}."]
    zero = report["zero_shot"]
    if zero.get("run"):
        lines.append(f"zero_shot: {zero['held_out']} tags held out of training, {zero['with_vector']} with a word "
                     f"vector, {zero['relevant_in_test']} on a test image ({zero['images']} images); ranked among "
                     f"the {zero['with_vector']}, images by cosine(g(f), v_w) (random-ranking mAP "
                     f"{_number(zero['map_random'])}).")
    return "\n".join(lines) + "\n"


def table(report: dict, methods=METHODS) -> list[str]:
    """The Markdown table of a report's methods (one row each, from model.metrics.summary's figures), as lines."""
    lines = ["| method | precision | recall | F1 | N+ | P@5 | R@5 | mAP | ms/image |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in methods:
        m = report[name]
        if not m.get("run", True):
            lines.append(f"| {name} | not run: {m['reason']} | | | | | | | |")
            continue
        lines.append(f"| {name} | {_number(m['precision'])} | {_number(m['recall'])} | {_number(m['f1'])} | "
                     f"{m['n_plus']} / {m['tags']} | {_number(m['p_at_5'])} | {_number(m['r_at_5'])} | "
                     f"{_number(m['map'])} | {_number(m.get('ms_per_image'), 2)} |")
    return lines


def _png(figure, dpi: int) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def plot_curves(report: dict) -> bytes:
    """evaluation_pr.png: per-image P@k and R@k, and per-tag precision and recall, for k = 1..CURVE_K,
    one line per method that ran."""
    from matplotlib.figure import Figure   # the Agg canvas, no display and no pyplot state

    figure = Figure(figsize=(11, 4.2), layout="constrained")
    per_image, per_tag = figure.subplots(1, 2)
    for i, name in enumerate(METHODS):
        m = report[name]
        if not m.get("run", True):
            continue
        curve = m["curve"]
        for axes, p, r in ((per_image, "p_at_k", "r_at_k"), (per_tag, "precision", "recall")):
            axes.plot(curve["k"], curve[p], "o-", color=f"C{i}", label=f"{name} precision")
            axes.plot(curve["k"], curve[r], "s--", color=f"C{i}", label=f"{name} recall")
    per_image.set(title="per image: P@k, R@k", xlabel="k (tags predicted per image)")
    per_tag.set(title="per tag: mean precision, recall", xlabel="k (tags predicted per image)")
    for axes in (per_image, per_tag):
        axes.grid(alpha=0.3)
        axes.set_ylim(bottom=0)
    per_tag.legend(fontsize=7, ncol=2)
    return _png(figure, 100)


def plot_examples(photo_ids: np.ndarray, images: list, original: dict[int, list[str]], true_tags: list[set],
                  predictions: dict[str, np.ndarray], tags: list[str]) -> bytes:
    """evaluation_examples.png: a grid of test images with im2vec's and knn's top 5 (✓ = a true tag)
    and their original tags.

    Args:
        photo_ids: int64[M] the images shown (at most EXAMPLES); images: M PIL images (or None: no picture).
        original: photo_id -> the image's own tags (clean/); true_tags: M sets of true tag_ids.
        predictions: method -> int[>= M, >= TOP_K] ranked tag_ids, row i for image i ("im2vec", "knn").
        tags: the vocabulary, tag_id -> tag.
    """
    from matplotlib.figure import Figure

    columns = 4
    figure = Figure(figsize=(4 * columns, 5.2 * -(-len(photo_ids) // columns)), layout="constrained")
    axes_list = np.atleast_1d(figure.subplots(-(-len(photo_ids) // columns), columns)).ravel()
    for i, axes in enumerate(axes_list):
        axes.axis("off")
        if i >= len(photo_ids):
            continue
        if images[i] is not None:
            axes.imshow(images[i])
        predicted = {name: ", ".join(tags[t] + (" ✓" if t in true_tags[i] else "") for t in top[i][:TOP_K])
                     for name, top in predictions.items()}
        own = ", ".join(original.get(int(photo_ids[i]), [])[:12])
        # parse_math=False: a tag is user text, and "$" would start matplotlib's math mode.
        axes.set_title(f"photo {photo_ids[i]}\nim2vec: {predicted['im2vec']}\nknn: {predicted['knn']}\n"
                       f"original: {own}", fontsize=8, wrap=True, loc="left", parse_math=False)
    return _png(figure, 80)
