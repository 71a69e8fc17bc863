"""The cluster recipes (clusters/): launcher YAMLs validated by Ray's own cluster-config
schema and checks, KubeRay manifests with the fields KubeRay requires, the runtime env, the
MLflow server recipes, and `kdray mlflow-server` on 127.0.0.1. No cloud, no Kubernetes."""

import copy
import json
import signal
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from conftest import ctrl_c_able, free_port, wait_for_http
from kdray.trial.driver import DRIVER_RESOURCE_ENV, driver_resources

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = ROOT / "clusters"
LAUNCHERS = ["aws.yaml", "gcp.yaml"]


def load(path):
    return yaml.safe_load((CLUSTERS / path).read_text())


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_yaml_passes_rays_own_validation(name):
    config = load(name)
    validate_config(config)  # Ray's ray-schema.json plus its extra checks, as `ray up` does
    validate_config(prepare_config(copy.deepcopy(config)))  # with the provider's defaults


@pytest.mark.parametrize("name", LAUNCHERS)
def test_the_validator_does_reject_a_broken_config(name):
    broken = {**load(name), "max_worker": 3}  # a typo'd key
    with pytest.raises(jsonschema.ValidationError):
        validate_config(broken)
    bad_head = {**load(name), "head_node_type": "nope"}
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(bad_head)


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_layout_head_drivers_and_spot_gpu_groups(name):
    config = load(name)
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}  # no trials on the head
    drivers = types["drivers"]
    assert drivers["resources"]["kdray_driver"] > 0 and drivers["min_workers"] >= 1
    assert "spot" not in json.dumps(drivers["node_config"]).lower()  # on-demand
    gpu_groups = [t for t in types.values() if t["resources"].get("GPU")]
    assert len(gpu_groups) == 2
    for group in gpu_groups:
        assert group["min_workers"] == 0 and group["max_workers"] > 0  # from zero
        assert "spot" in json.dumps(group["node_config"]).lower()
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start  # never a public dashboard
    assert config["docker"]["image"].startswith("rayproject/ray:2.60.0-py311-gpu")
    assert {"**/mlflow.db", "**/mlartifacts", "**/results", "**/.cache"} <= set(
        config["rsync_exclude"]
    )
    setup = " ".join(config["initialization_commands"] + config["setup_commands"])
    assert "/mnt/kdray" in setup  # the shared file system for caches and Tune results


def test_kuberay_raycluster_has_what_kuberay_requires():
    cluster = load("kuberay/raycluster.yaml")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True and spec["rayVersion"] == "2.60.0"
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert head["template"]["spec"]["containers"][0]["image"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"drivers", "gpu-a100", "gpu-h100"}
    for group in groups.values():
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert isinstance(group["rayStartParams"], dict)
        container = group["template"]["spec"]["containers"][0]
        assert container["image"] and container["resources"]["limits"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/mnt/kdray" in mounts
    drivers = json.loads(json.loads(groups["drivers"]["rayStartParams"]["resources"]))
    assert drivers == {"kdray_driver": 100}
    for name in ("gpu-a100", "gpu-h100"):
        pod = groups[name]["template"]["spec"]
        assert groups[name]["minReplicas"] == 0
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        assert "cloud.google.com/gke-accelerator" in pod["nodeSelector"]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"


def test_one_rayjob_per_study_script():
    jobs = [d for d in yaml.safe_load_all((CLUSTERS / "kuberay/rayjobs.yaml").read_text()) if d]
    scripts = {p.name for p in (ROOT / "studies").glob("*.py")}
    ran = set()
    for job in jobs:
        assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
        assert job["spec"]["clusterSelector"] == {"ray.io/cluster": "kdray"}
        entry = job["spec"]["entrypoint"]
        script = entry.split("python studies/")[1].split()[0]
        assert script in scripts
        ran.add(script)
    assert ran == scripts
    claim = load("kuberay/shared-storage.yaml")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_runtime_env_pins_env_vars_and_excludes():
    env = load("runtime_env.yaml")
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert env["pip"]["packages"] == pins  # the same pins as pyproject.toml
    assert {"*.db", "mlartifacts/", "results/", ".cache/", ".git"} <= set(env["excludes"])
    assert {"MLFLOW_TRACKING_URI", "HF_HOME", "KDRAY_CACHE", DRIVER_RESOURCE_ENV} <= set(
        env["env_vars"]
    )
    secret = ("_TOKEN", "SECRET", "PASSWORD", "KEY")
    assert not any(word in k.upper() for k in env["env_vars"] for word in secret)
    from ray.runtime_env import RuntimeEnv

    RuntimeEnv(**env)  # Ray accepts it


def test_trial_drivers_ask_for_the_driver_resource_when_set(monkeypatch):
    monkeypatch.delenv(DRIVER_RESOURCE_ENV, raising=False)
    assert driver_resources() == {"cpu": 0.01}
    monkeypatch.setenv(DRIVER_RESOURCE_ENV, "kdray_driver")
    assert driver_resources() == {"cpu": 0.01, "kdray_driver": 0.01}


def test_mlflow_server_recipes():
    compose = load("mlflow/docker-compose.yaml")
    server = compose["services"]["mlflow"]
    assert "postgresql://" in server["command"] and "--artifacts-destination" in server["command"]
    assert server["ports"] == ["${MLFLOW_BIND:-127.0.0.1}:5000:5000"]  # local unless asked
    deployment, service = yaml.safe_load_all((CLUSTERS / "mlflow/kubernetes.yaml").read_text())
    assert deployment["kind"] == "Deployment" and service["spec"]["type"] == "ClusterIP"
    assert "mlflow==3.17.2" in (CLUSTERS / "mlflow/Dockerfile").read_text()


def non_loopback_addresses() -> list[str]:
    """This machine's own non-loopback IPv4 addresses (`hostname -I`)."""
    found = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    return [a for a in found if "." in a and not a.startswith("127.")]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_kdray_mlflow_server_serves_on_loopback_only_and_stops(tmp_path, stop):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "kdray", "mlflow-server", "--store", str(tmp_path),
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=ctrl_c_able,
    )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health")
        for address in non_loopback_addresses():  # not reachable on the machine's others
            with socket.socket() as client, pytest.raises(OSError):
                client.settimeout(2)
                client.connect((address, port))
        assert (tmp_path / "mlflow.db").is_file()
    finally:
        server.send_signal(stop)
        output = server.communicate(timeout=60)[0]
    assert server.returncode == 0, output
    assert f"MLflow server on http://127.0.0.1:{port}" in output
    with socket.socket() as client, pytest.raises(OSError):  # the server went with it
        client.settimeout(2)
        client.connect(("127.0.0.1", port))


def test_kdray_mlflow_server_refuses_a_missing_store(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "kdray", "mlflow-server", "--store", str(tmp_path / "nope")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "nope does not exist" in result.stderr
