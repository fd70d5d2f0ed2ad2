import json

from pipeline import cli, status, storage, submit


def test_submit_hands_the_stage_arguments_to_spark_submit(monkeypatch):
    calls = []
    monkeypatch.setattr(submit, "submit", lambda stage, profile, rest: calls.append((stage, profile, rest)) or 0)
    assert cli.main(["clean", "--root", "/r", "--submit", "standalone", "--input", "a.tsv", "--set", "seed=3"]) == 0
    assert cli.main(["vocab", "--submit=local", "--root", "/r"]) == 0
    assert calls == [("clean", "standalone", ["--root", "/r", "--input", "a.tsv", "--set", "seed=3"]),
                     ("vocab", "local", ["--root", "/r"])]


def test_status_lists_every_stage_as_missing_on_an_empty_root(tmp_path, capsys):
    assert cli.main(["status", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in status.STAGES:
        expected = "epochs" if name == "sample" else name
        assert f"{expected} " in out
    assert out.count("missing") == len(status.STAGES) + len(status.MODEL_OUTPUTS)
    assert "staging" not in out and "train:" not in out and "evaluate" not in out


def test_status_shows_training_index_evaluation_and_stale_staging(tmp_path, capsys):
    root = storage.to_uri(str(tmp_path))
    storage.write_manifest(storage.join(root, "clean"), "clean", rows_in=10, rows_out=9, rows_rejected=1,
                           parameters={}, inputs=[], started=0.0)
    # What crashed stages leave: their staging folders, next to the outputs they would have replaced.
    staged = [storage.staging_uri(storage.join(root, *final)) for final in
              [("vocab",), ("rejects", "features"), ("epochs", "epoch=00001")]]
    for uri in staged:
        storage.write_text(storage.join(uri, "part-00000.parquet"), "half written")
    storage.write_text(storage.join(root, "model", "progress.json"), json.dumps(
        {"epoch": 2, "step": 1234, "val_p_at_5": 0.21345, "popularity_p_at_5": 0.1, "updated": "2026-01-02T03:04:05"}))
    storage.write_text(storage.join(root, "reports", "train.png"), "a plot")   # the trainer's, not evaluate's
    storage.write_manifest(storage.join(root, "index"), "index", rows_in=9, rows_out=9, rows_rejected=0, dim=50,
                           model_epoch=1, parameters={}, inputs=[], started=0.0)

    text = status.status_text(root)
    state = {line.split()[0]: line.split()[1] for line in text.splitlines()[2:]}
    assert state["clean"] == "complete" and state["vocab"] == "missing"
    assert state["model"] == "partial" and state["index"] == "complete" and state["reports"] == "missing"
    assert "train: epoch 2, step 1,234, validation P@5 0.2135 (popularity 0.1000)" in text
    assert "index: 9 embeddings of dimension 50 from the model of epoch 1: older than the model (epoch 2)" in text
    for uri in staged:
        assert f"stale staging folder from a crashed run: {uri} (safe to delete" in text
    assert "evaluate" not in text

    scores = {"p_at_5": 0.3, "r_at_5": 0.4, "f1": 0.25, "map": 0.5, "precision": 0.3, "recall": 0.2}
    storage.write_text(storage.join(root, "reports", "evaluation.json"), json.dumps(
        {"im2vec": scores, "popularity": {**scores, "p_at_5": 0.1, "map": None}, "sizes": {"test_images": 9}}))
    assert "reports              partial" in status.status_text(root)   # evaluate started, no manifest yet
    storage.write_manifest(storage.join(root, "reports"), "evaluate", rows_in=9, rows_out=9, rows_rejected=0,
                           parameters={}, inputs=[], started=0.0)
    text = status.status_text(root)
    assert "reports              complete" in text
    assert "evaluate im2vec: P@5 0.3000 R@5 0.4000 F1 0.2500 mAP 0.5000" in text
    assert "evaluate popularity: P@5 0.1000 R@5 0.4000 F1 0.2500 mAP -" in text

    assert cli.main(["status", "--root", root, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["stale_staging"] == sorted(staged)
    assert shown["model/progress.json"]["step"] == 1234 and shown["clean"]["rows_out"] == 9


def test_bad_config_key_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["vocab", "--root", str(tmp_path), "--set", "min_imags=3"]) == 2
    assert "unknown config key 'min_imags'" in capsys.readouterr().err
