"""One configuration for every stage: packaged defaults, then a YAML file, then --set.

The configuration is a flat mapping of key -> value, so a key has one name everywhere: in
YAML, on the command line (``--set negatives=20``) and in the code (``config["negatives"]``).
Keys starting with ``spark.`` are Spark properties and are handed to the session as they are.
"""
from __future__ import annotations

import sys
from importlib import resources
from typing import Callable, Iterable, Mapping

import yaml

from pipeline import Im2vecError


class ConfigError(Im2vecError, ValueError):
    """A configuration file or a --set override that cannot be used."""


# Keys renamed to match the README's glossary: old name -> (new name, old value -> new value).
# The old names keep working for one release (0.2), with a one-line notice naming the new key.
RENAMED: dict[str, tuple[str, Callable]] = {
    "images": ("image_uri", lambda value: value),
    "epochs": ("num_epochs", lambda value: value),
    "pos_alpha": ("pos_power", lambda value: -float(value)),
    "partitions": ("output_partitions", lambda value: value),
}


def _current_name(key: str, origin: str) -> str:
    """``key`` as it is called now; an old name prints the deprecation notice once per use."""
    if key in RENAMED:
        new = RENAMED[key][0]
        extra = " and its value is negated (pos_weight = images ** pos_power)" if key == "pos_alpha" else ""
        print(f"[im2vec] config: {key!r} (from {origin}) is deprecated, use {new!r}{extra}", file=sys.stderr)
    return RENAMED[key][0] if key in RENAMED else key


def defaults() -> dict:
    """The packaged default configuration (``pipeline/defaults.yaml``) as a dict."""
    text = resources.files("pipeline").joinpath("defaults.yaml").read_text()
    return yaml.safe_load(text) or {}


def parse_override(item: str) -> tuple[str, object]:
    """Parse one ``key=value`` override; the value is read as YAML (``5`` -> int, ``[a, b]`` -> list)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: cannot read {raw!r} as a value: {err}") from None
    return key, value


def load(path: str | None = None, overrides: Iterable[str] = (), **explicit) -> dict:
    """Build the configuration for a run.

    Args:
        path: optional YAML file whose keys replace the defaults.
        overrides: ``key=value`` strings from ``--set``, applied after the file.
        explicit: values from dedicated flags (``master=...``), applied last; None is ignored.

    Returns:
        A flat dict. Unknown keys are an error unless they are Spark properties, so a typo in
        ``--set min_imags=5`` fails loudly instead of being ignored.
    """
    config = defaults()
    known = set(config)
    layers: list[tuple[str, Mapping]] = []
    if path:
        try:
            with open(path) as fh:
                from_file = yaml.safe_load(fh) or {}
        except OSError as err:
            raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
        if not isinstance(from_file, dict):
            raise ConfigError(f"config file {path} must hold a mapping of key: value")
        layers.append((path, {_current_name(k, path): _converted(k, v) for k, v in from_file.items()}))
    from_set = {}
    for item in overrides:
        old, _, text = item.partition("=")
        key = _current_name(old.strip(), "--set")
        if isinstance(config.get(key), str):
            # A string key keeps its text as typed: "{hash}.jpg" is a template, not YAML.
            quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""
            from_set[key] = yaml.safe_load(text) if quoted else text
            continue
        _, value = parse_override(item)
        from_set[key] = _converted(old.strip(), value)
    layers.append(("--set", from_set))
    layers.append(("flags", {k: v for k, v in explicit.items() if v is not None}))
    for origin, layer in layers:
        for key, value in layer.items():
            if key not in known and not key.startswith("spark."):
                raise ConfigError(
                    f"unknown config key {key!r} (from {origin}); known keys: {', '.join(sorted(known))}")
            config[key] = value
    return config


def _converted(key: str, value):
    """An old key's value in its new key's terms (``pos_alpha: 0.5`` is ``pos_power: -0.5``)."""
    return RENAMED[key][1](value) if key in RENAMED else value


_SECRET_WORDS = ("secret", "password", "access.key", "session.token", "credential", "token")


def redacted(config: Mapping) -> dict:
    """The configuration as it may be written to manifests and logs: secrets masked."""
    return {k: ("***" if any(w in k.lower() for w in _SECRET_WORDS) else v) for k, v in config.items()}
