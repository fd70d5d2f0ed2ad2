import pytest

from pipeline import config as configuration


def test_set_values_are_yaml_but_string_keys_keep_their_text():
    c = configuration.load(overrides=["negatives=5", "extra_stoplist=[a, b]", "image_uri={hash[0:3]}/{hash}.jpg"])
    assert c["negatives"] == 5 and c["extra_stoplist"] == ["a", "b"]
    assert c["image_uri"] == "{hash[0:3]}/{hash}.jpg"
    assert configuration.load(overrides=["image_uri='{download_url}'"])["image_uri"] == "{download_url}"


def test_renamed_keys_still_work_for_one_release_with_a_notice(tmp_path, capsys):
    c = configuration.load(overrides=["images={download_url}", "epochs=7", "pos_alpha=0.25", "partitions=3"])
    assert (c["image_uri"], c["num_epochs"], c["pos_power"], c["output_partitions"]) == ("{download_url}", 7, -0.25, 3)
    assert not {"images", "epochs", "pos_alpha", "partitions"} & set(c)
    notices = capsys.readouterr().err.splitlines()
    assert len(notices) == 4 and all("is deprecated, use" in line for line in notices)
    assert "'pos_alpha' (from --set) is deprecated, use 'pos_power' and its value is negated" in notices[2]
    path = tmp_path / "old.yaml"
    path.write_text("epochs: 3\nimages: '{hash}.jpg'\n")
    c = configuration.load(str(path))
    assert (c["num_epochs"], c["image_uri"]) == (3, "{hash}.jpg")
    assert f"'epochs' (from {path}) is deprecated, use 'num_epochs'" in capsys.readouterr().err


def test_unknown_keys_fail_and_spark_keys_pass():
    with pytest.raises(configuration.ConfigError, match="unknown config key 'min_imags'"):
        configuration.load(overrides=["min_imags=5"])
    assert configuration.load(overrides=["spark.executor.memory=8g"])["spark.executor.memory"] == "8g"


def test_secrets_are_redacted():
    out = configuration.redacted({"spark.hadoop.fs.s3a.secret.key": "x", "seed": 1})
    assert out == {"spark.hadoop.fs.s3a.secret.key": "***", "seed": 1}
