"""deploy/k8s/im2vec-schedule.yaml: a CronJob whose container runs one `im2vec schedule --once` pass that the
command line accepts, with a config the loader accepts and the environment the k8s profile needs."""
from pathlib import Path

import yaml

from pipeline import cli, config as configuration, submit

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "im2vec-schedule.yaml"


def test_the_cronjob_runs_one_schedule_pass_through_spark_submit(tmp_path):
    documents = {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text())}
    cron = documents["CronJob"]
    assert cron["apiVersion"] == "batch/v1" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    container = pod["containers"][0]
    assert container["command"] == ["/opt/im2vec/.venv/bin/im2vec"]
    args = cli.build_parser().parse_args(container["args"])
    assert (args.command, args.once, args.plan, args.submit) == ("schedule", True, False, "k8s")

    # The --config file is the ConfigMap's, mounted where the args say, and holds known keys only.
    mount = next(m for m in container["volumeMounts"] if args.config.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    configmap = documents["ConfigMap"]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    config_file = tmp_path / Path(args.config).name
    config_file.write_text(configmap["data"][config_file.name])
    config = configuration.load(str(config_file))
    assert config["ahead"] >= 1 and config["consumer_stale_seconds"] > 0

    # The k8s profile finds every variable it requires in the container's environment.
    environ = {e["name"]: e.get("value", "from-the-pod") for e in container["env"]}
    settings = submit.read_profile("k8s", environ)
    assert settings["spark.master"] == "k8s://https://kubernetes.default.svc"
    assert settings["spark.kubernetes.container.image"] == container["image"]
    assert settings["spark.kubernetes.authenticate.driver.serviceAccountName"] == pod["serviceAccountName"]
