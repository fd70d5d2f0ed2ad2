from pipeline import cli, submit


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
    for name in cli.STAGES:
        expected = "epochs" if name == "sample" else name
        assert f"{expected} " in out
    assert out.count("missing") == len(cli.STAGES)


def test_bad_config_key_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["vocab", "--root", str(tmp_path), "--set", "min_imags=3"]) == 2
    assert "unknown config key 'min_imags'" in capsys.readouterr().err
