"""The ``im2vec`` command: one subcommand per stage, plus ``run``, ``status`` and data tools.

Contract (other tools call it; keep it stable)::

    im2vec STAGE --root ROOT [--config FILE] [--set key=value]... [--master URL]
    im2vec clean --root ROOT --input PATH_OR_GLOB...
    im2vec run   --root ROOT --input PATH [--set image_uri=TEMPLATE]
    im2vec synth --rows N --layout 23|25 --out PATH
    im2vec demo-data --out DIR [--corpus openclipart|openmoji] [--source PATH]
    im2vec status --root ROOT
    im2vec evaluate --root ROOT [--against OTHER_ROOT]
    im2vec compare-sampling --root ROOT [--variants A,B] [--seeds 1,2,3] [--keep-epochs]
    im2vec serve --root ROOT [--port P] [--host 127.0.0.1]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from pipeline import Im2vecError, config as configuration, run as runner, status, storage

# The Spark stages; every one of them can go through spark-submit (--submit).
SPARK_STAGES = status.STAGES + ["index"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", required=True, help="run root URI or path (file://, hdfs://, s3a://)")
    parser.add_argument("--config", help="YAML file of config keys (see pipeline/defaults.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key; repeatable")
    parser.add_argument("--master", help="Spark master URL (default from config: local[*])")
    parser.add_argument("--submit", metavar="PROFILE",
                        help="run on a cluster via spark-submit: deploy/profiles/PROFILE.conf or a .conf path")


class _ConfigList(argparse.Action):
    """``--hashes A B`` is ``--set hashes=[A, B]``: a config key, so spark-submit and `im2vec run` see it too."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.overrides = [*namespace.overrides, f"{self.dest}={json.dumps(values)}"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="im2vec", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("clean", help="parse and clean raw YFCC metadata into clean/ (Spark)")
    _common(p)
    p.add_argument("--input", nargs="+", required=True, metavar="PATH_OR_GLOB",
                   help="YFCC metadata files, folders or globs; plain or .bz2, 23- or 25-column layout")
    p.add_argument("--hashes", nargs="+", action=_ConfigList, metavar="PATH_OR_GLOB",
                   help="the 2014 release's yfcc100m_hash(.bz2): fills the hash of rows without one (config key hashes)")

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

    p = sub.add_parser("schedule", help="keep `ahead` epochs sampled ahead of the fastest consumer (long-running); "
                                        "with --submit each batch of epochs is its own Spark application")
    _common(p)
    p.add_argument("--once", action="store_true", help="bring epochs up to date once, then exit")
    p.add_argument("--plan", action="store_true", help="print what one pass would do as JSON; change nothing")
    p.add_argument("--delete-only", action="store_true",
                   help="delete the epochs every live consumer has finished; sample nothing")

    p = sub.add_parser("train", help="train the projection on epochs/ (TensorFlow; waits for unsampled epochs)")
    _common(p)

    p = sub.add_parser("index", help="embed every image with the trained model into index/ (Spark)")
    _common(p)

    _add_query_commands(sub)

    p = sub.add_parser("evaluate", help="P/R/F1/N+ at 5 and mAP on the test split vs baselines -> reports/")
    _common(p)
    p.add_argument("--against", metavar="OTHER_ROOT",
                   help="score the model on another run root's test images, over the tags both vocabularies "
                        "share -> reports/cross-NAME/ (NAME: OTHER_ROOT's folder name)")

    p = sub.add_parser("compare-sampling", help="train each sampling variant (config sampling_variants) with each "
                                                "seed on the root's split -> reports/sampling/")
    _common(p)
    p.add_argument("--variants", type=_names, metavar="A,B", help="variants to run (default: all)")
    p.add_argument("--seeds", type=_seeds, default=[1, 2, 3], metavar="1,2,3", help="one run per seed (default 1,2,3)")
    p.add_argument("--keep-epochs", action="store_true", help="keep each run's epochs/ and checkpoints")

    p = sub.add_parser("run", help="run every stage in order")
    _common(p)
    p.add_argument("--input", nargs="+", required=True, metavar="PATH_OR_GLOB")

    p = sub.add_parser("status", help="show what each stage under a root produced, and the epochs' consumers")
    p.add_argument("--root", required=True)
    p.add_argument("--config", help="YAML file of config keys (consumer_stale_seconds)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true", help="print the manifests as JSON")
    p.add_argument("--verify", action="store_true",
                   help="check every finished dataset's files against its manifest; exit 1 if any is missing, "
                        "extra or truncated")

    p = sub.add_parser("serve", help="a web page on localhost to search images with words and see their tags")
    p.add_argument("--root", required=True)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 exposes it to the network")

    _add_data_commands(sub)
    return parser


def _add_query_commands(sub) -> None:
    """The subcommands that read a trained run without Spark: tag and search."""
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


def _add_data_commands(sub) -> None:
    """The subcommands that make input data: synth and demo-data."""
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


def _epoch_range(text: str) -> tuple[int, int]:
    first, _, last = text.partition("-")
    try:
        a, b = int(first), int(last or first)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A-B, e.g. 1-5, got {text!r}") from None
    if a < 1 or b < a:
        raise argparse.ArgumentTypeError(f"epochs start at 1 and A <= B, got {text!r}")
    return a, b


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected names separated by commas, got {text!r}")
    return list(dict.fromkeys(names))


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(seed) for seed in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, e.g. 1,2,3, "
                                         f"got {text!r}") from None
    if any(seed < 0 for seed in seeds):
        raise argparse.ArgumentTypeError(f"seeds are at least 0, got {text!r}")
    return list(dict.fromkeys(seeds))


def _load_config(args) -> dict:
    return configuration.load(args.config, args.overrides, master=args.master)


def cmd_stage(args) -> int:
    config = _load_config(args)
    if args.command == "sample" and args.check:
        from jobs import sample
        from pipeline.spark import session

        epoch = (args.epochs or (1, 1))[0]
        report = sample.check(session(config, "im2vec sample --check"), config, storage.to_uri(args.root), epoch)
        print(json.dumps(report, indent=2))
        return 0
    runner.stage(args.command, config, storage.to_uri(args.root), inputs=getattr(args, "input", None),
                 epochs=getattr(args, "epochs", None))
    return 0


def cmd_train(args) -> int:
    runner.train(_load_config(args), storage.to_uri(args.root))
    return 0


def cmd_evaluate(args) -> int:
    if args.against:
        runner.evaluate_against(_load_config(args), storage.to_uri(args.root), storage.to_uri(args.against))
        return 0
    runner.evaluate(_load_config(args), storage.to_uri(args.root))
    return 0


def cmd_compare_sampling(args) -> int:
    from pipeline import compare

    compare.run(_load_config(args), storage.to_uri(args.root), variants=args.variants, seeds=args.seeds,
                keep_epochs=args.keep_epochs)
    return 0


def cmd_schedule(args) -> int:
    from jobs import schedule

    config, root = _load_config(args), storage.to_uri(args.root)
    if args.plan or args.delete_only:
        planned = schedule.plan(config, root)
        if args.delete_only:
            schedule.delete_finished(root, planned)
        else:
            print(json.dumps(planned.as_json(), indent=2))
        return 0
    # With --submit the batches go to spark-submit with the user's own config arguments.
    stage_args = ([] if args.config is None else ["--config", args.config]) + \
        [a for o in args.overrides for a in ("--set", o)] + ([] if args.master is None else ["--master", args.master])
    schedule.run(config, root, once=args.once, submit=args.submit, stage_args=stage_args)
    return 0


def cmd_run(args) -> int:
    runner.everything(_load_config(args), storage.to_uri(args.root), args.input)
    return 0


def cmd_status(args) -> int:
    root = storage.to_uri(args.root)
    stale = float(configuration.load(args.config, args.overrides)["consumer_stale_seconds"])
    print(status.status_json(root, stale) if args.json else status.status_text(root, stale))
    if not args.verify:
        return 0
    text, ok = status.verify_text(root)
    print(text)
    return 0 if ok else 1


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
            "serve": cmd_serve, "tag": cmd_tag, "search": cmd_search, "evaluate": cmd_evaluate,
            "compare-sampling": cmd_compare_sampling}


def main(argv: list[str] | None = None) -> int:
    if argv is None:   # the console script, on a terminal (a caller passing argv keeps its own stderr)
        from pipeline import quiet

        quiet.filter_native_stderr()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    handler = HANDLERS.get(args.command, cmd_stage)
    # schedule takes --submit itself: each batch of epochs is the sample stage through spark-submit.
    if getattr(args, "submit", None) and args.command != "schedule":
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
