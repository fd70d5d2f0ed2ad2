import pytest

from pipeline import config as configuration


def test_set_values_are_yaml_but_string_keys_keep_their_text():
    c = configuration.load(overrides=["negatives=5", "extra_stoplist=[a, b]", "images={hash[0:3]}/{hash}.jpg"])
    assert c["negatives"] == 5 and c["extra_stoplist"] == ["a", "b"]
    assert c["images"] == "{hash[0:3]}/{hash}.jpg"
    assert configuration.load(overrides=["images='{download_url}'"])["images"] == "{download_url}"


def test_unknown_keys_fail_and_spark_keys_pass():
    with pytest.raises(configuration.ConfigError, match="unknown config key 'min_imags'"):
        configuration.load(overrides=["min_imags=5"])
    assert configuration.load(overrides=["spark.executor.memory=8g"])["spark.executor.memory"] == "8g"


def test_secrets_are_redacted():
    out = configuration.redacted({"spark.hadoop.fs.s3a.secret.key": "x", "seed": 1})
    assert out == {"spark.hadoop.fs.s3a.secret.key": "***", "seed": 1}
