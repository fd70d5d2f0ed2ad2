"""`im2vec compare-sampling`: train each sampling variant with each seed on one run root, and report them.

A variant is a name and the config keys it sets (config ``sampling_variants``, pipeline/defaults.yaml).
Each (variant, seed) is a run root of its own, ROOT/comparisons/sampling/VARIANT/seed-S/
(pipeline.datasets.comparisons): links to ROOT's clean/, tagged/, zero_shot/, wordvec/ and features/, so
every run has the same split, vocabulary, word vectors, features and test images, and a vocab/ of its own
whose sampling weights follow the variant's ``neg_power`` and ``pos_power``. In it the real stages run
in this process, as `im2vec run` runs them: sample (epochs 1..num_epochs, timed), train, index and
evaluate (its test images chosen with ROOT's seed, the same for every run). The run's epochs and
checkpoints are deleted once the model is trained (``keep_epochs`` keeps them); result.json, written
last, marks the run done, and a run that has one is not run again. After every run ROOT/reports/sampling/
is written anew from every finished run (model/sampling_report.py).

The seed of a run (config ``seed``) draws its epochs, the model's initial weights and row order, and the
trainer's validation subset (at most validation_user_cap images per user); at one seed every variant
sees the same validation images.

Only file:// roots: a run links ROOT's folders, which object stores have no way to do, and copying
features/ into every run would cost more than the comparison is worth; other roots get a one-line error.
"""
from __future__ import annotations

import os
import time

import numpy as np

from pipeline import Im2vecError, config as configuration, storage
from pipeline.datasets import comparisons, epochs as epochs_data, model as model_data, vocab as vocab_data

# Keys a variant cannot set: ROOT's vocab/ and tagged/, which every run shares, were made with them
# (neg_power and pos_power excepted: each run writes its own weights), and the command sets these two.
FIXED_KEYS = {"min_images", "min_users", "max_size", "zero_shot_fraction", "validation_fraction", "test_fraction",
              "seed", "model_dir"}


def log(message: str) -> None:
    """One progress line on stdout: ``[im2vec] compare-sampling: message``."""
    print(f"[im2vec] compare-sampling: {message}", flush=True)


def chosen_variants(config: dict, names: list[str] | None) -> dict[str, dict]:
    """{variant: its config overrides} of config ``sampling_variants``, all or those ``names`` picks, in order.

    Raises:
        Im2vecError: sampling_variants is not a mapping of name -> mapping, or a name is not among them.
    """
    variants = config.get("sampling_variants") or {}
    if not isinstance(variants, dict) or not all(isinstance(v, dict) or v is None for v in variants.values()):
        raise Im2vecError("sampling_variants must map each variant's name to the config keys it sets, "
                          "e.g. {neg_power_0: {neg_power: 0}}")
    unknown = [name for name in names or [] if name not in variants]
    if unknown:
        raise Im2vecError(f"unknown sampling variant(s) {', '.join(map(repr, unknown))}; "
                          f"sampling_variants has {', '.join(variants) or 'none'}")
    return {str(name): dict(variants[name] or {}) for name in (names or variants)}


def variant_config(config: dict, name: str, overrides: dict, seed: int) -> dict:
    """The configuration of one run: ``config`` with the variant's keys and the run's seed, checked.

    Raises:
        Im2vecError: naming the variant: a key unknown or fixed by the root, a sampling method that is
            not in pipeline.sampling.METHODS, or a value the sample stage or the trainer refuses.
    """
    from jobs import sample
    from model import train
    from pipeline import sampling

    known = set(configuration.defaults())
    for key in overrides:
        if key not in known:
            raise Im2vecError(f"sampling variant {name!r}: unknown config key {key!r}")
        if key in FIXED_KEYS:
            raise Im2vecError(f"sampling variant {name!r}: {key} cannot vary between runs of one root "
                              "(the runs share its vocab/ and split; seeds come from --seeds)")
    run = {**config, **overrides, "seed": int(seed), "model_dir": ""}
    try:
        sampling.method(run)
        sample.parameters(run)
        train.parameters(run)
    except Im2vecError as err:
        raise Im2vecError(f"sampling variant {name!r}: {err}") from None
    return run


def check_variants(config: dict, variants: dict[str, dict]) -> None:
    """Every variant's configuration, checked before any run starts; one line names every variant that cannot run."""
    failed = []
    for name, overrides in variants.items():
        try:
            comparisons.check_name(name)
            variant_config(config, name, overrides, 0)
        except Im2vecError as err:
            failed.append(str(err))
    if failed:
        raise Im2vecError("; ".join(failed) + (" (choose others with --variants)" if len(failed) < len(variants)
                                               else ""))


def check_root(root: str) -> None:
    """ROOT must be a file:// root with finished vocab/ (and tagged/), wordvec/ and features/."""
    from pipeline.datasets import features, tagged, wordvec

    if not root.startswith("file://"):
        raise Im2vecError(f"compare-sampling needs a file:// run root (each run links the root's clean/, "
                          f"tagged/, wordvec/ and features/), got {root}")
    for dataset in (vocab_data.DATASET, tagged.DATASET, wordvec.DATASET, features.DATASET):
        dataset.require(root)


def link_shared(root: str, run_root: str) -> None:
    """Make ``run_root`` and link ROOT's shared folders into it (pipeline.datasets.comparisons.SHARED)."""
    path = storage.filesystem(run_root)[1]
    os.makedirs(path, exist_ok=True)
    for dataset in comparisons.SHARED:
        source = storage.filesystem(dataset.uri(root))[1]
        if os.path.exists(source):
            # Relative: the links still hold when the whole root is moved or mounted elsewhere.
            os.symlink(os.path.relpath(source, path), os.path.join(path, dataset.folder))


def write_vocab(root: str, run_root: str, config: dict) -> None:
    """The run's vocab/: ROOT's vocabulary, with ``neg_weight = images ** neg_power`` and ``pos_weight =
    images ** pos_power`` of ``config`` (a column whose power ROOT's vocab stage used is kept as it is);
    its manifest vouches for the linked tagged/ and zero_shot/ as ROOT's does."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.time()
    made = vocab_data.DATASET.require(root)
    # Under the keys' current names: a root made before 0.2 says pos_alpha for -pos_power.
    made_with = {configuration.RENAMED[key][0] if key in configuration.RENAMED else key:
                 configuration.RENAMED[key][1](value) if key in configuration.RENAMED else value
                 for key, value in (made.get("parameters") or {}).items()}
    table = vocab_data.read(root)
    for column, key in (("neg_weight", "neg_power"), ("pos_weight", "pos_power")):
        if made_with.get(key) is None or float(made_with[key]) != float(config[key]):
            images = table.column("images").to_numpy().astype(np.float64)
            table = table.set_column(table.schema.get_field_index(column), column,
                                     pa.array(images ** float(config[key])))
    folder = vocab_data.DATASET.uri(run_root)
    fs, path = storage.filesystem(folder)
    fs.create_dir(path, recursive=True)
    pq.write_table(table, f"{path}/part-00000.parquet", filesystem=fs)
    covered = [dataset.uri(run_root) for dataset in comparisons.SHARED
               if dataset.manifest_folder == vocab_data.DATASET.folder and storage.exists(dataset.uri(run_root))]
    storage.write_manifest(
        folder, "vocab", rows_in=made["rows_in"], rows_out=made["rows_out"], rows_rejected=made["rows_rejected"],
        parameters={**made_with, "neg_power": config["neg_power"], "pos_power": config["pos_power"]},
        inputs=[vocab_data.DATASET.uri(root)], started=started, covers=tuple(covered),
        **{key: made[key] for key in ("untagged", "vocab_size", "zero_shot_tags", "distinct_tags", "splits")
           if key in made})


def epoch_bytes(manifest: dict) -> int:
    """Bytes of an epoch's data files, as its manifest lists them."""
    return int(sum((manifest.get("data_files") or {}).get(".", {}).values()))


def train_and_score(config: dict, run_root: str, *, test_seed: int, keep_epochs: bool) -> dict:
    """sample, train, index and evaluate in ``run_root`` (made by :func:`link_shared` and :func:`write_vocab`).

    Returns:
        The run's record without its variant, seed and overrides (model/sampling_report.py).
    """
    from model import evaluate, train
    from pipeline import run as runner

    started = time.time()
    sampled = runner.stage("sample", config, run_root)
    epochs = [storage.read_manifest(e["output"]) for e in sampled["epochs"]]
    trained = runner.train(config, run_root)
    if not keep_epochs:
        storage.delete(epochs_data.parent_uri(run_root))
        storage.delete(storage.join(model_data.DATASET.uri(run_root), "checkpoints"))
    runner.stage("index", config, run_root)
    report = evaluate.run({**config, "seed": test_seed}, run_root)["report"]
    history = model_data.read_progress(run_root).get("history", [])
    best = train.best_epoch(history)

    def scalars(figures: dict | None) -> dict | None:
        return None if not figures or not figures.get("run", True) else \
            {key: value for key, value in figures.items() if not isinstance(value, (dict, list))}

    return {
        "validation": {"f1": best.get("val_f1"), "p_at_5": best.get("val_p_at_5"), "r_at_5": best.get("val_r_at_5"),
                       "best_epoch": best.get("epoch"), "epochs_trained": len(history),
                       "popularity_f1": best.get("popularity_f1")},
        "test": scalars(report["im2vec"]), "zero_shot": scalars(report.get("zero_shot")),
        "baselines": {name: scalars(report.get(name)) for name in ("popularity", "knn")},
        "sizes": report.get("sizes", {}),
        "cost": {"sample_seconds_per_epoch": float(np.mean([e["seconds"] for e in epochs])),
                 "bytes_per_epoch": float(np.mean([epoch_bytes(e) for e in epochs])),
                 "examples_per_second": trained.get("examples_per_second"), "epochs_sampled": len(epochs),
                 "sample_seconds": sampled["seconds"], "train_seconds": trained["seconds"],
                 "seconds": time.time() - started},
    }


def write_report(root: str, records: list[dict], order: list[str], planned: int, started: float) -> dict:
    """ROOT/reports/sampling/ from the finished runs' records; returns sampling.json's object."""
    import json

    from model import sampling_report

    result = sampling_report.report(records, order)
    folder = comparisons.REPORT.uri(root)
    storage.delete(storage.join(folder, storage.MANIFEST))
    storage.write_text(storage.join(folder, comparisons.REPORT_JSON), json.dumps(result, indent=2) + "\n")
    storage.write_text(storage.join(folder, comparisons.REPORT_MD), sampling_report.markdown(result))
    storage.write_bytes(storage.join(folder, comparisons.REPORT_PNG), sampling_report.plot(result))
    storage.write_manifest(folder, "compare-sampling", rows_in=planned, rows_out=len(records),
                           rows_rejected=planned - len(records), parameters={"variants": order},
                           inputs=[comparisons.parent_uri(root)], started=started, winner=result["winner"])
    return result


def one_run(config: dict, root: str, name: str, overrides: dict, seed: int, keep_epochs: bool) -> dict:
    """Make the run root of (variant ``name``, ``seed``) afresh, train and score it, write its result.json;
    returns the record."""
    import keras

    run_root = comparisons.run_uri(root, name, seed)
    if storage.exists(run_root):
        log(f"{name} seed {seed}: starting over: {run_root} stopped before its result")
        storage.delete(run_root)    # deletes the links, never what they point to
    run_config = variant_config(config, name, overrides, seed)
    link_shared(root, run_root)
    write_vocab(root, run_root, run_config)
    record = {"variant": name, "seed": int(seed), "overrides": overrides,
              **train_and_score(run_config, run_root, test_seed=int(config["seed"]), keep_epochs=keep_epochs)}
    comparisons.write_result(run_root, record)
    keras.backend.clear_session()   # one process trains every run: drop the last one's graphs
    validation, cost = record["validation"], record["cost"]
    log(f"{name} seed {seed}: validation per-tag F1 {validation['f1']:.4f} (epoch {validation['best_epoch']} of "
        f"{validation['epochs_trained']}), test per-tag F1 {record['test']['f1']:.4f}, mAP "
        f"{record['test']['map'] or 0:.4f}; sample {cost['sample_seconds_per_epoch']:.1f}s and "
        f"{cost['bytes_per_epoch'] / 1e6:.1f} MB per epoch, {cost['examples_per_second'] or 0:,.0f} examples/s "
        f"({cost['seconds']:.0f}s)")
    return record


def run(config: dict, root: str, *, variants: list[str] | None = None, seeds: list[int] = (1, 2, 3),
        keep_epochs: bool = False) -> dict:
    """Train and score every chosen variant with every seed (module docstring); write ROOT/reports/sampling/.

    Args:
        config: the configuration every run starts from; root: the run root URI (file://).
        variants: names among config ``sampling_variants`` (None: all); seeds: one run per variant each.
        keep_epochs: keep each run's epochs/ and model/checkpoints/.

    Returns:
        sampling.json's object (model.sampling_report.report); its Markdown table goes to stdout.
    """
    from model import sampling_report

    started = time.time()
    root = storage.to_uri(root)
    chosen = chosen_variants(config, variants)
    check_variants(config, chosen)
    check_root(root)
    runs = [(seed, name) for seed in seeds for name in chosen]
    records, earlier = [], 0
    for number, (seed, name) in enumerate(runs, 1):
        run_root = comparisons.run_uri(root, name, seed)
        record = comparisons.read_result(run_root)
        if record is not None:
            log(f"run {number} of {len(runs)}: {name} seed {seed}: done earlier "
                f"({run_root}/{comparisons.RESULT}), not run again")
            earlier += 1
        else:
            log(f"run {number} of {len(runs)}: {name} seed {seed} -> {run_root}")
            record = one_run(config, root, name, chosen[name], seed, keep_epochs)
            write_report(root, [*records, record], list(chosen), len(runs), started)   # so far
        records.append(record)
    result = write_report(root, records, list(chosen), len(runs), started)
    print(sampling_report.markdown(result))
    written = ", ".join((comparisons.REPORT_JSON, comparisons.REPORT_MD, comparisons.REPORT_PNG))
    log(f"{len(records)} runs ({earlier} done earlier) in {time.time() - started:.0f}s -> "
        f"{comparisons.REPORT.uri(root)}/: {written}")
    return result
