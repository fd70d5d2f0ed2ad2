"""Submit a stage to a cluster with spark-submit, from a profile in ``deploy/profiles/``.

``im2vec clean --submit yarn --root s3a://bucket/run1 --input ...`` runs::

    $SPARK_HOME/bin/spark-submit --master yarn --conf spark.submit.deployMode=cluster \\
        --conf ... .../pipeline/app/main.py clean --root s3a://bucket/run1 --input ...

A profile is a text file in the format of Spark's ``spark-defaults.conf``: one ``key value``
per line, ``#`` comments. Keys starting with ``spark.`` are Spark properties and go to
spark-submit as ``--conf key=value`` (``spark.master`` as ``--master``); ``im2vec.app`` is the
application file to run, given the stage name first (default: this installation's
``pipeline/app/main.py``; ``local:///opt/im2vec/pipeline/app/main.py`` for code inside an image); every
other key is an im2vec config key (``pipeline/defaults.yaml``) and goes to the stage as
``--set key=value``. Values may name environment variables, ``${NAME}`` (required) or
``${NAME:-default}``; a line whose value comes out empty is left out, so a profile can hold
optional settings. A key the user sets with the stage's ``--set`` (or in its ``--config`` file)
beats the profile's line, and a ``spark.*`` one goes to spark-submit as ``--conf`` too;
``defaults.yaml``'s ``spark.*`` values never beat the profile (pipeline.spark.properties).
Credentials never belong in a profile: Spark and boto3 take them from the standard AWS chain
(instance profile, IRSA, environment) on each machine.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from pipeline import Im2vecError, config as configuration, spark as spark_session

PROFILES = Path(__file__).resolve().parent.parent / "deploy" / "profiles"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def profile_path(profile: str) -> Path:
    """A profile name (``yarn`` -> ``deploy/profiles/yarn.conf``) or a path to a profile file."""
    path = Path(profile)
    if path.suffix == ".conf" or os.sep in profile:
        if path.is_file():
            return path
        raise Im2vecError(f"profile file {profile} does not exist")
    path = PROFILES / f"{profile}.conf"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILES.glob("*.conf"))) or "none"
        raise Im2vecError(f"no profile {profile!r} in {PROFILES} (known: {known}); or give a path to a .conf file")
    return path


def read_profile(profile: str, environ: dict | None = None) -> dict[str, str]:
    """The settings of a profile, environment variables expanded, empty values left out.

    Args:
        profile: a name in ``deploy/profiles/`` or a path.
        environ: the variables to expand (default ``os.environ``).

    Returns:
        {key: value} in file order.
    """
    environ = os.environ if environ is None else environ
    path = profile_path(profile)
    settings = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.replace("\t", " ").partition(" ")
        value = _expand(value.strip(), environ, f"profile {path} line {number} ({key})")
        if value:
            settings[key] = value
    return settings


def _expand(value: str, environ, where: str) -> str:
    """``${NAME}`` and ``${NAME:-default}`` in ``value`` from ``environ``; an empty variable counts as unset."""
    def variable(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if environ.get(name):
            return environ[name]
        if default is None:
            raise Im2vecError(f"{where} needs the environment variable {name}")
        return default

    return _VARIABLE.sub(variable, value)


def spark_submit_path(environ: dict | None = None) -> str:
    """``$SPARK_HOME/bin/spark-submit``, else the one of the installed pyspark (same Spark version)."""
    environ = os.environ if environ is None else environ
    home = environ.get("SPARK_HOME")
    if not home:
        from pyspark.find_spark_home import _find_spark_home

        home = _find_spark_home()
    return str(Path(home) / "bin" / "spark-submit")


def submit_command(stage: str, profile: str, args: list[str], environ: dict | None = None) -> list[str]:
    """The spark-submit command line that runs ``stage`` as the profile says.

    Args:
        stage: a stage with a job module, e.g. ``"clean"`` (``jobs/clean.py``).
        profile: a profile name in ``deploy/profiles/`` or a path to a profile file.
        args: the stage's arguments as given to ``im2vec STAGE`` (``--root ...``); a
            ``--submit PROFILE`` among them is dropped.
        environ: environment for ``${NAME}`` in the profile and ``SPARK_HOME`` (default os.environ).

    Returns:
        argv: ``[spark-submit, --master, URL, --conf, k=v, ..., APP, stage, *args, --set, k=v, ...]``.
    """
    if importlib.util.find_spec(f"jobs.{stage}") is None:
        raise Im2vecError(f"no job for stage {stage!r} (jobs/{stage}.py)")
    settings = read_profile(profile, environ)
    app = settings.pop("im2vec.app", importlib.util.find_spec("pipeline.app.main").origin)
    if "{stage}" in app:
        raise Im2vecError(f"im2vec.app {app}: one application file runs every stage now (it takes the stage "
                          "name first); name pipeline/app/main.py, e.g. local:///opt/im2vec/pipeline/app/main.py")
    command = [spark_submit_path(environ)]
    if "spark.master" in settings:
        command += ["--master", settings.pop("spark.master")]
    spark = {k: v for k, v in settings.items() if k.startswith("spark.")}
    # What the user set (--config, --set) beats the profile. Spark properties among it go to
    # spark-submit too: some only count when the driver starts (spark.driver.memory, spark.jars.packages).
    users = _users_config(args)
    overrides = [f"{k}={v}" for k, v in settings.items() if not k.startswith("spark.") and k not in users]
    configuration.load(overrides=overrides)  # an unknown key fails here, not on the cluster
    spark.update(spark_session.explicit_properties(users))
    # A driver on this machine runs this interpreter, not a packed environment's path that
    # only exists inside YARN containers (spark.pyspark.python would otherwise apply to it).
    if spark.get("spark.submit.deployMode", "client") == "client":
        spark.setdefault("spark.pyspark.driver.python", sys.executable)
    for key, value in spark.items():
        command += ["--conf", f"{key}={value}"]
    return command + [app, stage, *_without_submit(args), *(a for o in overrides for a in ("--set", o))]


def _users_config(args: list[str]) -> dict:
    """The config keys the stage's ``--config`` file and ``--set`` give a value other than ``defaults.yaml``'s."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--config")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    known, _ = parser.parse_known_args(args)
    packaged = configuration.defaults()
    return {k: v for k, v in configuration.load(known.config, known.overrides).items()
            if k not in packaged or v != packaged[k]}


def _without_submit(args: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--submit":
            skip = True
        elif not arg.startswith("--submit="):
            kept.append(arg)
    return kept


def masked(command: list[str]) -> str:
    """The command as a shell line with secret-looking ``key=value`` values shown as ``***``."""
    shown = []
    for arg in command:
        key, sep, value = arg.partition("=")
        if sep and not arg.startswith("-") and configuration.redacted({key: value})[key] != value:
            arg = f"{key}=***"
        shown.append(arg)
    return shlex.join(shown)


def submit(stage: str, profile: str, args: list[str]) -> int:
    """Run :func:`submit_command` and return spark-submit's exit code (the stage's, in client mode).

    Executors and a client-mode driver run this interpreter unless the profile names another
    (``spark.pyspark.python``): a bare ``python3`` on PATH would miss every package.
    """
    command = submit_command(stage, profile, args)
    env = dict(os.environ)
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    print(f"[im2vec] {stage}: {masked(command)}", file=sys.stderr, flush=True)
    return subprocess.run(command, env=env).returncode
