"""deploy/: the Kubernetes manifests validate offline, and they and the systemd units fit the code.

The manifests are validated with kubernetes-validate's bundled schemas (no network, no cluster),
strictly (an unknown field fails), against the oldest Kubernetes they need and the newest the
package knows. The stop timeouts are checked against the code's own shutdown bounds.
"""

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from ingest.delivery.tasks import PRODUCER_FLUSH_TIMEOUT_S
from ingestsite.server.supervisor import CHILD_KILL_WAIT_S, CHILD_STOP_MARGIN_S
from tests.unit.test_configuration import CONFIGURATION, documented_names

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SYSTEMD = ROOT / "deploy" / "systemd"
MANIFESTS = sorted([*K8S.glob("*.yaml"), K8S / "secret.yaml.example"])
UNITS = {name: SYSTEMD / f"{name}.service" for name in ("ingest-gateway", "ingest-worker")}
ENV_EXAMPLE = SYSTEMD / "ingest.env.example"  # "env" in the places settings_set() lists
# preStop's sleep action is beta and on by default from Kubernetes 1.30.
OLDEST_KUBERNETES = "1.30"
INSTALL_DIR = "/opt/ingest-gateway"
VERIFY_TIMEOUT_S = 60
# Documented defaults the worker's stop depends on (docs/CONFIGURATION.md).
KAFKA_DELIVERY_TIMEOUT_S = 15
DATABASE_CONNECT_TIMEOUT_S = 5


def documents() -> list[dict]:
    return [
        document
        for path in MANIFESTS
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if document
    ]


def resource(kind: str, name: str) -> dict:
    (found,) = [
        document
        for document in documents()
        if document["kind"] == kind and document["metadata"]["name"] == name
    ]
    return found


def container(deployment: str) -> dict:
    (only,) = resource("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return only


def env_value(deployment: str, name: str) -> str:
    (value,) = [item["value"] for item in container(deployment)["env"] if item["name"] == name]
    return value


def settings_set() -> dict[str, list[str]]:
    """Map each setting the deployment files set to the files and resources that set it."""
    found = {}

    def add(names, where: str) -> None:
        for name in names:
            found.setdefault(name, []).append(where)

    for document in documents():
        where = f"{document['kind']}/{document['metadata']['name']}"
        if document["kind"] == "ConfigMap":
            add(document["data"], where)
        elif document["kind"] == "Secret":
            add(document["stringData"], where)
        elif document["kind"] == "Deployment":
            for each in document["spec"]["template"]["spec"]["containers"]:
                add((item["name"] for item in each.get("env", [])), where)
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    add((line.split("=", 1)[0] for line in lines if line and not line.startswith("#")), "env")
    return found


def unit(name: str) -> configparser.ConfigParser:
    # systemd allows a key more than once; these units do not, so a plain parser reads them.
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str
    parser.read_string(UNITS[name].read_text(encoding="utf-8"))
    return parser


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, kubernetes_validate.latest_version()])
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_each_manifest_validates_against_the_bundled_schemas(path, version):
    for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        kubernetes_validate.validate(document, version, strict=True)


def test_a_manifest_with_an_unknown_field_fails_validation():
    deployment = resource("Deployment", "ingest-gateway")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, OLDEST_KUBERNETES, strict=True)


def test_the_manifests_hold_every_part_of_the_deployment():
    kinds = {(doc["apiVersion"], doc["kind"], doc["metadata"]["name"]) for doc in documents()}
    assert kinds == {
        ("v1", "ConfigMap", "ingest-config"),
        ("v1", "Secret", "ingest-secrets"),
        ("apps/v1", "Deployment", "ingest-gateway"),
        ("v1", "Service", "ingest-gateway"),
        ("policy/v1", "PodDisruptionBudget", "ingest-gateway"),
        ("autoscaling/v2", "HorizontalPodAutoscaler", "ingest-gateway"),
        ("apps/v1", "Deployment", "ingest-worker"),
        ("policy/v1", "PodDisruptionBudget", "ingest-worker"),
    }


def test_the_gateway_is_ready_on_readyz_and_alive_on_healthz_with_an_allowed_host():
    gateway = container("ingest-gateway")
    ports = {port["name"]: port["containerPort"] for port in gateway["ports"]}
    assert gateway["command"][-2:] == ["--bind", f"0.0.0.0:{ports['http']}"]
    allowed = resource("ConfigMap", "ingest-config")["data"]["ALLOWED_HOSTS"].split(",")
    probes = {name: gateway[name]["httpGet"] for name in ("readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    for probe in probes.values():
        assert probe["port"] == "http"
        # Every path checks Host against ALLOWED_HOSTS; a probe's default Host is the pod's IP.
        (host,) = [header["value"] for header in probe["httpHeaders"] if header["name"] == "Host"]
        assert host in allowed


def test_each_selector_matches_the_pods_it_is_for():
    for name in ("ingest-gateway", "ingest-worker"):
        deployment = resource("Deployment", name)
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        selectors = [
            deployment["spec"]["selector"]["matchLabels"],
            resource("PodDisruptionBudget", name)["spec"]["selector"]["matchLabels"],
        ]
        if name == "ingest-gateway":
            selectors.append(resource("Service", name)["spec"]["selector"])
        for selector in selectors:
            assert selector.items() <= pod_labels.items(), (name, selector)


def test_the_autoscaler_scales_the_gateway_on_cpu():
    autoscaler = resource("HorizontalPodAutoscaler", "ingest-gateway")["spec"]
    assert autoscaler["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "ingest-gateway",
    }
    (metric,) = autoscaler["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    # The Redis fallback divides a limit by this: never fewer than the processes that can run.
    processes = int(env_value("ingest-gateway", "SERVE_PROCESSES"))
    configured = resource("ConfigMap", "ingest-config")["data"]["INGEST_RATE_LIMIT_PROCESSES"]
    assert int(configured) >= autoscaler["maxReplicas"] * processes


def test_the_gateway_pods_get_the_time_serve_py_takes_to_drain():
    pod = resource("Deployment", "ingest-gateway")["spec"]["template"]["spec"]
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    shutdown = float(env_value("ingest-gateway", "SERVE_SHUTDOWN_TIMEOUT"))
    assert int(env_value("ingest-gateway", "SERVE_PROCESSES")) > 1  # the supervisor's bound
    drain = shutdown + CHILD_STOP_MARGIN_S + CHILD_KILL_WAIT_S
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain


def worker_drain_s() -> float:
    return KAFKA_DELIVERY_TIMEOUT_S + DATABASE_CONNECT_TIMEOUT_S + PRODUCER_FLUSH_TIMEOUT_S


def test_the_worker_pods_get_the_time_a_warm_shutdown_takes():
    pod = resource("Deployment", "ingest-worker")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= worker_drain_s()
    command = container("ingest-worker")["command"]
    assert command[1:6] == ["-A", "celery_app", "worker", "--pool", "threads"]


@pytest.mark.parametrize("name", sorted(settings_set()))
def test_every_setting_the_deployment_files_set_is_documented(name):
    documented = documented_names(CONFIGURATION.read_text(encoding="utf-8"))
    assert name in documented, f"{settings_set()[name]} set {name}, not in CONFIGURATION.md"


def test_the_setting_scan_reads_every_kind_of_file():
    found = settings_set()
    assert found["ALLOWED_HOSTS"] == ["ConfigMap/ingest-config", "env"]
    assert found["SECRET_KEY"] == ["Secret/ingest-secrets", "env"]
    assert found["SERVE_PROCESSES"] == ["Deployment/ingest-gateway"]
    assert found["SERVE_SHUTDOWN_TIMEOUT"] == ["Deployment/ingest-gateway", "env"]


@pytest.mark.parametrize("name", sorted(UNITS))
def test_each_unit_has_what_running_the_service_needs(name):
    service = unit(name)["Service"]
    assert service["EnvironmentFile"] == "/etc/ingest-gateway/ingest.env"
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed"
    assert service["Restart"] == "on-failure"
    assert service["User"] != "root"
    assert unit(name)["Install"]["WantedBy"] == "multi-user.target"


def test_the_units_run_the_gateway_and_the_worker_and_wait_for_their_drain():
    gateway = unit("ingest-gateway")["Service"]
    assert gateway["ExecStart"].split()[1:] == ["serve.py", "--bind", "0.0.0.0:8000"]
    shutdown = 10  # SERVE_SHUTDOWN_TIMEOUT's default
    stop_s = int(gateway["TimeoutStopSec"])
    assert stop_s >= shutdown + CHILD_STOP_MARGIN_S + CHILD_KILL_WAIT_S
    worker = unit("ingest-worker")["Service"]
    assert worker["ExecStart"].split()[1:5] == ["-A", "celery_app", "worker", "--pool"]
    assert "threads" in worker["ExecStart"].split()
    # systemd would expand Celery's %h to the service user's home directory.
    assert not re.search(r"(?<!%)%h", worker["ExecStart"])
    assert int(worker["TimeoutStopSec"]) >= worker_drain_s()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
@pytest.mark.parametrize("name", sorted(UNITS))
def test_each_unit_passes_systemd_analyze_verify(name, tmp_path):
    # verify checks that ExecStart's program exists: point the unit at this checkout and the
    # virtualenv running the tests.
    text = UNITS[name].read_text(encoding="utf-8")
    text = text.replace(f"{INSTALL_DIR}/.venv/bin", str(Path(sys.executable).parent))
    copy = tmp_path / UNITS[name].name
    copy.write_text(text.replace(INSTALL_DIR, str(ROOT)))
    completed = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=VERIFY_TIMEOUT_S,
        check=False,
    )
    # verify exits 0 even for an unknown key or a bad value: any message is a failure.
    assert completed.returncode == 0 and not completed.stdout + completed.stderr, (
        completed.stdout + completed.stderr
    )
