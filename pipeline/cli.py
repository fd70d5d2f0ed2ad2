"""The ``im2vec`` command: one subcommand per stage, plus ``run``, ``status`` and data tools.

Contract (other tools call it; keep it stable)::

    im2vec STAGE --root ROOT [--config FILE] [--set key=value]... [--master URL]
    im2vec clean --root ROOT --input PATH_OR_GLOB...
    im2vec run   --root ROOT --input PATH [--set images=TEMPLATE]
    im2vec synth --rows N --layout 23|25 --out PATH
    im2vec demo-data --out DIR [--corpus openclipart|openmoji] [--source PATH]
    im2vec status --root ROOT
    im2vec evaluate --root ROOT
    im2vec serve --root ROOT [--port P] [--host 127.0.0.1]
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

import pyarrow.fs as pafs

from pipeline import Im2vecError, config as configuration, storage

# Spark stages in pipeline order; `im2vec run` runs every one of them.
STAGES = ["clean", "vocab", "wordvec", "features", "sample"]
# ... and after training, `index`; every one of these can go through spark-submit (--submit).
SPARK_STAGES = STAGES + ["index"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", required=True, help="run root URI or path (file://, hdfs://, s3a://)")
    parser.add_argument("--config", help="YAML file of config keys (see pipeline/defaults.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key; repeatable")
    parser.add_argument("--master", help="Spark master URL (default from config: local[*])")
    parser.add_argument("--submit", metavar="PROFILE",
                        help="run on a cluster via spark-submit: deploy/profiles/PROFILE.conf or a .conf path")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="im2vec", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("clean", help="parse and clean raw YFCC metadata into clean/ (Spark)")
    _common(p)
    p.add_argument("--input", nargs="+", required=True, metavar="PATH_OR_GLOB",
                   help="YFCC metadata files, folders or globs; plain or .bz2, 23- or 25-column layout")

    p = sub.add_parser("vocab", help="build the tag vocabulary and the by-user split (Spark)")
    _common(p)

    p = sub.add_parser("wordvec", help="tag vectors: gensim word2vec on tag lists and/or pretrained GloVe")
    _common(p)

    p = sub.add_parser("features", help="CNN features of every photo into features/ (Spark)")
    _common(p)

    p = sub.add_parser("sample", help="pre-sample positives and negatives for epochs into epochs/ (Spark)")
    _common(p)
    p.add_argument("--epochs", type=_epoch_range, default=None, metavar="A-B",
                   help="inclusive epoch range, e.g. 1-5 (default: 1-<config epochs>)")
    p.add_argument("--check", action="store_true",
                   help="report how well drawn negatives match neg_weight and the positives' skew")

    p = sub.add_parser("schedule", help="keep `ahead` epochs sampled ahead of the trainer (long-running)")
    _common(p)
    p.add_argument("--once", action="store_true", help="bring epochs up to date once, then exit")

    p = sub.add_parser("train", help="train the projection on epochs/ (TensorFlow; waits for unsampled epochs)")
    _common(p)

    p = sub.add_parser("index", help="embed every image with the trained model into index/ (Spark)")
    _common(p)

    p = sub.add_parser("tag", help="the top-k tags of image files, folders of them or photo ids",
                       epilog="exit status: 0 every input was tagged; 1 some inputs could not be (each says why, "
                              "the others are tagged); 2 none could be, or a usage error (no model, bad option)")
    p.add_argument("--root", required=True)
    p.add_argument("--k", type=int, default=5, help="tags per input")
    p.add_argument("--any-word", action="store_true", help="rank every word with a vector, not only the vocabulary")
    p.add_argument("--json", action="store_true", help='print {input: [{"tag": ..., "score": ...}, ...]}; '
                   'an input that cannot be tagged gets {"error": reason, "detail": ...} instead')
    p.add_argument("inputs", nargs="+", metavar="IMAGE_FOLDER_OR_PHOTO_ID",
                   help="an image file, a folder (its .jpg/.jpeg/.png/.gif/.webp/.bmp/.tif/.tiff files, sorted) "
                        "or a photo id in features/")

    p = sub.add_parser("search", help="the top-k images for a word or words (needs `im2vec index`)")
    p.add_argument("--root", required=True)
    p.add_argument("--k", type=int, default=10, help="images to return")
    p.add_argument("--json", action="store_true", help='print {"query": ..., "results": [...]}')
    p.add_argument("words", nargs="+")

    p = sub.add_parser("evaluate", help="P/R/F1/N+ at 5 and mAP on the test split vs baselines -> reports/")
    _common(p)

    p = sub.add_parser("run", help="run every stage in order")
    _common(p)
    p.add_argument("--input", nargs="+", required=True, metavar="PATH_OR_GLOB")

    p = sub.add_parser("status", help="show what each stage under a root produced")
    p.add_argument("--root", required=True)
    p.add_argument("--json", action="store_true", help="print the manifests as JSON")

    p = sub.add_parser("serve", help="a web page on localhost to search images with words and see their tags")
    p.add_argument("--root", required=True)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 exposes it to the network")

    p = sub.add_parser("synth", help="write synthetic YFCC metadata with realistic statistics")
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--layout", type=int, choices=[23, 25], default=25)
    p.add_argument("--out", required=True, help="output file (.bz2 compresses)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--malformed", type=float, default=0.01, help="fraction of malformed rows")

    p = sub.add_parser("demo-data", help="convert a real corpus (openclipart, openmoji) into YFCC metadata + images")
    p.add_argument("--out", required=True, help="folder for metadata.tsv and images/")
    p.add_argument("--limit", type=int, default=0, help="at most this many images (0 = all)")
    p.add_argument("--corpus", choices=["openclipart", "openmoji"], default="openclipart",
                   help="openclipart: Debian's openclipart-svg/-png; openmoji: the npm package openmoji 17.0.0")
    p.add_argument("--source", help="where the corpus is (default: openclipart /usr/share/openclipart; "
                                    "openmoji .cache/openmoji-17.0.0 in the checkout, made by `make openmoji`)")
    return parser


def _epoch_range(text: str) -> tuple[int, int]:
    first, _, last = text.partition("-")
    try:
        a, b = int(first), int(last or first)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A-B, e.g. 1-5, got {text!r}") from None
    if a < 1 or b < a:
        raise argparse.ArgumentTypeError(f"epochs start at 1 and A <= B, got {text!r}")
    return a, b


def _load_config(args) -> dict:
    return configuration.load(args.config, args.overrides, master=args.master)


def _run_stage(name: str, args, config: dict) -> dict:
    from pipeline.spark import session

    job = importlib.import_module(f"jobs.{name}")
    spark = session(config, f"im2vec {name}")
    root = storage.to_uri(args.root)
    started = time.time()
    kwargs = {}
    if name == "clean":
        kwargs["inputs"] = args.input
    if name == "sample":
        kwargs["epochs"] = getattr(args, "epochs", None) or (1, int(config["epochs"]))
    from pipeline import progress

    with progress.report(spark, name):
        manifest = job.run(spark, config, root, **kwargs)
    print(f"[im2vec] {name}: {manifest['rows_in']:,} rows in, {manifest['rows_out']:,} out, "
          f"{manifest['rows_rejected']:,} rejected in {time.time() - started:.1f}s -> {manifest['output']}")
    return manifest


def cmd_stage(args) -> int:
    config = _load_config(args)
    if args.command == "sample" and args.check:
        from jobs import sample
        from pipeline.spark import session

        epoch = (args.epochs or (1, 1))[0]
        report = sample.check(session(config, "im2vec sample --check"), config, storage.to_uri(args.root), epoch)
        print(json.dumps(report, indent=2))
        return 0
    _run_stage(args.command, args, config)
    return 0


def cmd_train(args) -> int:
    from model import train

    m = train.run(_load_config(args), storage.to_uri(args.root))
    print(f"[im2vec] train: epoch {m['epoch']}, step {m['step']}; validation per-tag F1@5 {_number(m.get('val_f1'))} "
          f"(popularity {_number(m.get('popularity_f1'))}), P@5 {_number(m.get('val_p_at_5'))} "
          f"(popularity {_number(m.get('popularity_p_at_5'))}) -> {m.get('output', m.get('model_dir'))}")
    return 0


def cmd_evaluate(args) -> int:
    from model import evaluate

    manifest = evaluate.run(_load_config(args), storage.to_uri(args.root))
    print(manifest["markdown"])
    print(f"[im2vec] evaluate: {manifest['rows_out']:,} test images in {manifest['seconds']:.1f}s -> "
          f"{manifest['output']}/evaluation.json, evaluation.md, evaluation_pr.png, evaluation_examples.png")
    return 0


def cmd_schedule(args) -> int:
    from jobs import schedule

    schedule.run(_load_config(args), storage.to_uri(args.root), once=args.once)
    return 0


def cmd_run(args) -> int:
    config = _load_config(args)
    root = storage.to_uri(args.root)
    for name in STAGES:
        if name == "features" and not config.get("images"):
            print("[im2vec] features: SKIPPED: no image source; pass --set images=TEMPLATE "
                  "(sample then runs without a feature column, and there is nothing to train on)", file=sys.stderr)
            continue
        _run_stage(name, args, config)
    if storage.read_manifest(storage.join(root, "features")) is not None:
        # The stages above were made anew, so an earlier model (its checkpoints included) is stale.
        if storage.exists(storage.join(root, "model")):
            print(f"[im2vec] train: starting over: deleting the earlier model {storage.join(root, 'model')}",
                  file=sys.stderr)
            storage.delete(storage.join(root, "model"))
        cmd_train(args)
        _run_stage("index", args, config)
        cmd_evaluate(args)
    print()
    print(status_text(root))
    return 0


# What train, index and evaluate write, after the Spark stages' outputs.
MODEL_OUTPUTS = ["model", "index", "reports"]
# A folder under one of these named _staging-* is a stage's unfinished output (storage.staging_uri).
STAGING_PARENTS = ["", "rejects", "epochs"]


def stage_manifests(root: str) -> dict[str, dict | None]:
    """{output folder: its manifest or None} for every stage under ``root``, in pipeline order.

    Most stages write one folder named like the stage; ``sample`` writes one folder per epoch;
    then MODEL_OUTPUTS (train: ``model/``, index: ``index/``, evaluate: ``reports/``).
    """
    found: dict[str, dict | None] = {}
    for name in STAGES:
        if name != "sample":
            found[name] = storage.read_manifest(storage.join(root, name))
            continue
        epochs_uri = storage.join(root, "epochs")
        fs, path = storage.filesystem(epochs_uri)
        if storage.exists(epochs_uri):
            for info in sorted(fs.get_file_info(pafs.FileSelector(path)), key=lambda i: i.base_name):
                if info.type == pafs.FileType.Directory and info.base_name.startswith("epoch="):
                    found[f"epochs/{info.base_name}"] = storage.read_manifest(storage.join(epochs_uri, info.base_name))
        if not any(k.startswith("epochs/") for k in found):
            found["epochs"] = None
    for name in MODEL_OUTPUTS:
        found[name] = storage.read_manifest(storage.join(root, name))
    return found


def staging_folders(root: str) -> list[str]:
    """URIs of the ``_staging-*`` folders under ``root`` (and its rejects/ and epochs/), sorted.

    A stage builds its output in one and moves it into place at the end; one that is still
    there after the stage ended is left by a crashed run.
    """
    found = []
    for parent in STAGING_PARENTS:
        uri = storage.join(root, parent) if parent else root
        if not storage.exists(uri):
            continue
        fs, path = storage.filesystem(uri)
        found += [storage.join(uri, info.base_name) for info in fs.get_file_info(pafs.FileSelector(path))
                  if info.type == pafs.FileType.Directory and info.base_name.startswith("_staging-")]
    return sorted(found)


def _read_json(uri: str) -> dict | None:
    try:
        return json.loads(storage.read_text(uri))
    except (FileNotFoundError, OSError, ValueError):
        return None


def _number(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _summary_lines(root: str, manifests: dict[str, dict | None]) -> list[str]:
    """Lines on training progress (model/progress.json), the index and the evaluation, where they exist."""
    lines = []
    progress = _read_json(storage.join(root, "model", "progress.json"))
    if progress:
        lines.append(f"train: epoch {progress.get('epoch')}, step {progress.get('step') or 0:,}, validation P@5 "
                     f"{_number(progress.get('val_p_at_5'))} (popularity {_number(progress.get('popularity_p_at_5'))}), "
                     f"updated {progress.get('updated', '-')}")
    index = manifests.get("index")
    if index:
        trained = (manifests.get("model") or progress or {}).get("epoch")
        stale = "" if trained is None or index.get("model_epoch") in (None, trained) else \
            f": older than the model (epoch {trained}), run `im2vec index` again"
        lines.append(f"index: {index['rows_out']:,} embeddings of dimension {index.get('dim')} from the model "
                     f"of epoch {index.get('model_epoch')}{stale}")
    report = _read_json(storage.join(root, "reports", "evaluation.json"))
    for method, scores in (report or {}).items():
        if isinstance(scores, dict) and "p_at_5" in scores:
            lines.append(f"evaluate {method}: P@5 {_number(scores.get('p_at_5'))} R@5 {_number(scores.get('r_at_5'))} "
                         f"F1 {_number(scores.get('f1'))} mAP {_number(scores.get('map'))}")
    return lines


def status_text(root: str) -> str:
    """A table of every stage output under ``root``: complete (counts, time), partial or missing.

    Then, where they exist: training progress, the index, the evaluation's scores, and any
    ``_staging-*`` folder a crashed run left behind.
    """
    lines = [f"im2vec run at {root}", f"{'output':<20} {'state':<9} {'rows in':>12} {'rows out':>12} "
             f"{'rejected':>10} {'seconds':>8}  finished"]
    manifests = stage_manifests(root)
    for name, manifest in manifests.items():
        if manifest is None:
            # reports/ also holds the trainer's plot: evaluate has started once evaluation.json exists.
            started = storage.join(root, name, "evaluation.json") if name == "reports" else storage.join(root, name)
            state = "partial" if storage.exists(started) else "missing"
            lines.append(f"{name:<20} {state:<9}")
            continue
        lines.append(f"{name:<20} {'complete':<9} {manifest['rows_in']:>12,} {manifest['rows_out']:>12,} "
                     f"{manifest['rows_rejected']:>10,} {manifest['seconds']:>8.1f}  {manifest['finished']}")
    lines += _summary_lines(root, manifests)
    lines += [f"stale staging folder from a crashed run: {uri} (safe to delete unless a stage is running now)"
              for uri in staging_folders(root)]
    return "\n".join(lines)


def cmd_status(args) -> int:
    root = storage.to_uri(args.root)
    if args.json:
        print(json.dumps({**stage_manifests(root),
                          "model/progress.json": _read_json(storage.join(root, "model", "progress.json")),
                          "stale_staging": staging_folders(root)}, indent=2))
    else:
        print(status_text(root))
    return 0


def cmd_synth(args) -> int:
    from pipeline import synth

    started = time.time()
    counts = synth.write(args.out, rows=args.rows, layout=args.layout, seed=args.seed,
                         malformed_fraction=args.malformed)
    print(f"[im2vec] synth: wrote {args.rows:,} rows ({args.layout}-column layout) to {args.out} "
          f"in {time.time() - started:.1f}s: {json.dumps(counts)}")
    return 0


def cmd_demo_data(args) -> int:
    from pipeline import openclipart, openmoji

    corpus = {"openclipart": openclipart, "openmoji": openmoji}[args.corpus]
    source = {"source": args.source} if args.source else {}
    summary = corpus.write_demo_data(args.out, limit=args.limit, **source)
    print(f"[im2vec] demo-data: {json.dumps(summary)}")
    return 0


def cmd_tag(args) -> int:
    from pipeline import tagging

    ranked = tagging.tag_inputs(storage.to_uri(args.root), args.inputs, k=args.k, any_word=args.any_word)
    failed = {name: error for name, error in ranked.items() if isinstance(error, tagging.InputError)}
    if args.json:
        print(json.dumps({name: {"error": failed[name].reason, "detail": failed[name].detail} if name in failed
                          else [{"tag": t, "score": round(s, 4)} for t, s in tags] for name, tags in ranked.items()}))
    else:
        for name, tags in ranked.items():
            print(name)
            print(f"  error: {failed[name].reason}: {failed[name].detail}" if name in failed else
                  "\n".join(f"  {rank:>3}  {score:8.3f}  {tag}" for rank, (tag, score) in enumerate(tags, 1)))
    if not failed:
        return 0
    print(f"[im2vec] tag: {len(failed)} of {len(ranked)} inputs could not be tagged", file=sys.stderr)
    return 2 if len(failed) == len(ranked) else 1


def cmd_search(args) -> int:
    from pipeline import query

    root, text = storage.to_uri(args.root), " ".join(args.words)
    model, index = query.load_model(root), query.load_index(root)
    if index.model_sha256 and index.model_sha256 != model.model_sha256:
        print(f"[im2vec] search: the index was made with another model: run `im2vec index --root {root}` "
              "again", file=sys.stderr)
    results = query.search(model, index, text, k=args.k)
    tags = query.photo_tags(root, [photo_id for photo_id, _ in results])
    if args.json:
        print(json.dumps({"query": text, "results": [{"photo_id": p, "score": round(s, 4), "tags": tags.get(p, [])}
                                                     for p, s in results]}))
    else:
        print(f"{'rank':>4}  {'photo_id':>20}  {'score':>6}  tags")
        for rank, (photo_id, score) in enumerate(results, 1):
            print(f"{rank:>4}  {photo_id:>20}  {score:6.3f}  {', '.join(tags.get(photo_id, []))}")
    return 0


def cmd_serve(args) -> int:
    from pipeline import serve

    serve.serve(args.root, host=args.host, port=args.port)
    return 0


HANDLERS = {"train": cmd_train, "schedule": cmd_schedule, "run": cmd_run, "status": cmd_status, "synth": cmd_synth, "demo-data": cmd_demo_data,
            "serve": cmd_serve, "tag": cmd_tag, "search": cmd_search, "evaluate": cmd_evaluate}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    handler = HANDLERS.get(args.command, cmd_stage)
    if getattr(args, "submit", None):
        if args.command not in SPARK_STAGES:
            print(f"im2vec {args.command}: error: --submit runs one Spark stage ({', '.join(SPARK_STAGES)})",
                  file=sys.stderr)
            return 2
        from pipeline import submit

        # The stage's own arguments, less --submit and its value: argv[i] precedes argv[1:][i].
        rest = [a for i, a in enumerate(argv[1:]) if a != "--submit" and not a.startswith("--submit=")
                and argv[i] != "--submit"]
        return submit.submit(args.command, args.submit, rest)
    try:
        return handler(args)
    except Im2vecError as err:
        print(f"im2vec {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
