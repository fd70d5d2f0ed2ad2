"""One configuration for every stage: packaged defaults, then a YAML file, then --set.

The configuration is a flat mapping of key -> value, so a key has one name everywhere: in
YAML, on the command line (``--set negatives=20``) and in the code (``config["negatives"]``).
Keys starting with ``spark.`` are Spark properties and are handed to the session as they are.
"""
from __future__ import annotations

from importlib import resources
from typing import Iterable, Mapping

import yaml

from pipeline import Im2vecError


class ConfigError(Im2vecError, ValueError):
    """A configuration file or a --set override that cannot be used."""


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
        layers.append((path, from_file))
    from_set = {}
    for item in overrides:
        key, _, text = item.partition("=")
        if isinstance(config.get(key.strip()), str):
            # A string key keeps its text as typed: "{hash}.jpg" is a template, not YAML.
            quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""
            from_set[key.strip()] = yaml.safe_load(text) if quoted else text
            continue
        key, value = parse_override(item)
        from_set[key] = value
    layers.append(("--set", from_set))
    layers.append(("flags", {k: v for k, v in explicit.items() if v is not None}))
    for origin, layer in layers:
        for key, value in layer.items():
            if key not in known and not key.startswith("spark."):
                raise ConfigError(
                    f"unknown config key {key!r} (from {origin}); known keys: {', '.join(sorted(known))}")
            config[key] = value
    return config



_SECRET_WORDS = ("secret", "password", "access.key", "session.token", "credential", "token")


def redacted(config: Mapping) -> dict:
    """The configuration as it may be written to manifests and logs: secrets masked."""
    return {k: ("***" if any(w in k.lower() for w in _SECRET_WORDS) else v) for k, v in config.items()}
