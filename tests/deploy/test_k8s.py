"""deploy/k8s, offline: every kustomization renders with ``kubectl kustomize``; every rendered
object and every manifest file validates against Kubernetes' JSON schemas (kubernetes-validate
bundles them per version) or, for KEDA's ScaledObject, keda_scaledobject.schema.json; and the
facts that tie the manifests to gre hold (probes, ports, drain time, GPU, metric names, the
config itself through gre's own loader)."""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import kubernetes_validate.utils as kv  # type: ignore[import-untyped]
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gre.config import Config, ConfigError, load_config
from gre.metrics import Metrics
from gre.zoo.manifest import load_manifest

Obj = dict[str, Any]

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy/k8s"
#: Every kustomization, and the whole apps among them (the others are pieces of overlays).
KUSTOMIZATIONS = ("base", "autoscaling/hpa", "autoscaling/keda", "overlays/hpa", "overlays/keda")
APPS = ("base", "overlays/hpa", "overlays/keda")
#: The autoscaler each app has; a Deployment scaled by both would be fought over.
AUTOSCALERS = {
    "base": set(),
    "overlays/hpa": {"HorizontalPodAutoscaler"},
    "overlays/keda": {"ScaledObject"},
}
ADAPTER_VALUES = K8S / "autoscaling/hpa/prometheus-adapter-values.yaml"
SCALEDOBJECT_SCHEMA = Path(__file__).with_name("keda_scaledobject.schema.json")
#: Every Kubernetes version kubernetes-validate has schemas for (1.25 up to its newest).
K8S_VERSIONS = sorted({kv.major_minor(v) for v in kv.all_versions()})
#: Kustomization keys kustomize v2.0.3 knows (its pkg/types/kustomization.go), the kustomize
#: in kubectl 1.14 to 1.20, Debian 12's kubernetes-client among them; it refuses any other.
KUSTOMIZE_V2_KEYS = frozenset(
    {
        "apiVersion", "kind", "namePrefix", "nameSuffix", "namespace", "commonLabels",
        "commonAnnotations", "patchesStrategicMerge", "patchesJson6902", "images", "vars",
        "resources", "crds", "bases", "configMapGenerator", "secretGenerator",
        "generatorOptions", "configurations",
    }
)  # fmt: skip
#: What kustomize v5 prints for `bases:`, which the overlays keep for v2's sake.
BASES_DEPRECATED = re.compile(r"# Warning: 'bases' is deprecated\b.*")


# --- rendering ---------------------------------------------------------------------------------


@functools.cache
def kubectl() -> str:
    """$KUBECTL, else the kubectl on PATH (KUBECTL=.../kubectl-1.20 checks kustomize v2)."""
    path = shutil.which(os.environ.get("KUBECTL") or "kubectl")
    if path is None:
        pytest.fail(
            "kubectl not found: deploy/k8s is rendered with `kubectl kustomize`; install it "
            "(Debian: apt-get install kubernetes-client)",
            pytrace=False,
        )
    return path


@functools.cache
def render(directory: str) -> tuple[Obj, ...]:
    """``kubectl kustomize deploy/k8s/DIRECTORY``'s objects (shared: do not modify them)."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S / directory)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"kubectl kustomize {directory}:\n{result.stderr}"
    noise = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not BASES_DEPRECATED.fullmatch(line.strip())
    ]
    assert not noise, f"kubectl kustomize {directory} warned:\n" + "\n".join(noise)
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def kustomization(directory: Path) -> Obj:
    loaded: Obj = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return loaded


def one(objects: tuple[Obj, ...], kind: str, name: str | None = None) -> Obj:
    found = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} objects named {name or 'anything'}"
    return found[0]


def container(deployment: Obj) -> Obj:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["gre"]
    found: Obj = containers[0]
    return found


def port_number(spec: Obj, port: int | str) -> int:
    """A probe's or Service's port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in spec["ports"] if p.get("name") == port]
    assert len(numbers) == 1, f"no container port named {port!r}"
    number: int = numbers[0]
    return number


def config_text(objects: tuple[Obj, ...]) -> str:
    configmaps = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("gre-config-")
    ]
    assert len(configmaps) == 1, "one gre-config-<hash> ConfigMap"
    text: str = configmaps[0]["data"]["gre.toml"]
    return text


def volume(deployment_or_job: Obj, name: str) -> Obj:
    (found,) = [
        v for v in deployment_or_job["spec"]["template"]["spec"]["volumes"] if v["name"] == name
    ]
    return found  # type: ignore[no-any-return]


def mount_path(spec: Obj, volume_name: str) -> str:
    (path,) = [m["mountPath"] for m in spec["volumeMounts"] if m["name"] == volume_name]
    return path  # type: ignore[no-any-return]


# --- the kustomize layout ----------------------------------------------------------------------


def test_every_kustomization_is_known_here() -> None:
    found = {str(p.parent.relative_to(K8S)) for p in K8S.rglob("kustomization.yaml")}
    assert found == set(KUSTOMIZATIONS)


@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_kustomization_renders(directory: str) -> None:
    objects = render(directory)
    assert objects
    assert all({"apiVersion", "kind", "metadata"} <= set(o) for o in objects)


@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_kustomization_keeps_to_kustomize_v2(directory: str) -> None:
    """kubectl <= 1.20 (kustomize v2.0.3) refuses unknown keys and reads only files from
    ``resources:`` (directories go in ``bases:``); newer ones accept this too (rendered above)."""
    here = K8S / directory
    spec = kustomization(here)
    assert set(spec) <= KUSTOMIZE_V2_KEYS, f"not in kustomize v2: {set(spec) - KUSTOMIZE_V2_KEYS}"
    for entry in spec.get("resources", []):
        assert (here / entry).is_file(), f"{directory}: resources: {entry} must be a file"
    for entry in spec.get("bases", []):
        assert (here / entry / "kustomization.yaml").is_file(), f"{directory}: bases: {entry}"
    for generator in spec.get("configMapGenerator", []):
        assert set(generator) <= {"name", "namespace", "behavior", "files", "literals", "env"}
        for file in generator.get("files", []):
            assert (here / file).is_file()


def resource_files() -> set[Path]:
    return {
        (K8S / directory / entry).resolve()
        for directory in KUSTOMIZATIONS
        for entry in kustomization(K8S / directory).get("resources", [])
    }


def test_every_yaml_file_is_a_resource_kustomization_or_the_adapter_values() -> None:
    """So that every YAML file gets checked by one of the tests here."""
    others = {p.resolve() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert others - {ADAPTER_VALUES.resolve()} == resource_files()


# --- schemas -----------------------------------------------------------------------------------


@functools.cache
def scaledobject_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCALEDOBJECT_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(obj: Obj) -> Iterator[str]:
    """Why ``obj`` fails its schema, in each Kubernetes version (strict: no unknown fields)."""
    what = f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}"
    if obj["apiVersion"].startswith("keda.sh/"):
        for error in scaledobject_validator().iter_errors(obj):
            yield f"{what}: {error.json_path}: {error.message}"
        return
    for version in K8S_VERSIONS:
        try:
            kv.validate(obj, version, strict=True)
        except kv.SchemaNotFoundError:
            yield f"{what}: no schema for {obj['apiVersion']} in Kubernetes {version}"
        except kv.ValidationError as exc:
            yield f"{what}: Kubernetes {version}: {exc.message}"


def test_schemas_cover_the_versions_claimed() -> None:
    assert K8S_VERSIONS[0] == "1.25"
    assert len(K8S_VERSIONS) >= 10


@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_rendered_objects_validate(directory: str) -> None:
    errors = [error for obj in render(directory) for error in schema_errors(obj)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize(
    "path", sorted(resource_files()), ids=lambda p: str(p.relative_to(K8S.resolve()))
)
def test_manifest_file_validates(path: Path) -> None:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert documents
    errors = [error for doc in documents for error in schema_errors(doc)]
    assert not errors, "\n".join(errors)


def test_schema_validation_refuses_a_misspelt_field() -> None:
    deployment = copy.deepcopy(one(render("base"), "Deployment", "gre"))
    pod = deployment["spec"]["template"]["spec"]
    pod["terminationGracePeriod"] = pod.pop("terminationGracePeriodSeconds")
    errors = list(schema_errors(deployment))
    assert len(errors) == len(K8S_VERSIONS)
    assert "'terminationGracePeriod' was unexpected" in errors[0]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            lambda t: t["metadata"].update(threshold=8), "8 is not of type 'string'", id="number"
        ),
        pytest.param(
            lambda t: t["metadata"].pop("query"), "'query' is a required property", id="no-query"
        ),
        pytest.param(lambda t: t.update(metadata_="x"), "'metadata_' was unexpected", id="typo"),
    ],
)
def test_scaledobject_schema_refuses_what_keda_would(change: Any, expected: str) -> None:
    scaled = copy.deepcopy(one(render("overlays/keda"), "ScaledObject"))
    change(scaled["spec"]["triggers"][0])
    assert any(expected in error for error in schema_errors(scaled)), list(schema_errors(scaled))


# --- the pod -----------------------------------------------------------------------------------


def pod_config(objects: tuple[Obj, ...], tmp_path: Path, environ: dict[str, str]) -> Config:
    """The pod's config through gre's own loader. load_config checks that the model files
    exist and are readable (nothing more), and they exist only in the pod, under the models
    volume: here that volume's root becomes tmp_path, holding empty files of the same names."""
    deployment = one(objects, "Deployment", "gre")
    models = mount_path(container(deployment), "models").rstrip("/") + "/"
    text = config_text(objects)
    local = text.replace(f'"{models}', f'"{tmp_path}/')
    raw = tomllib.loads(local)
    paths = [raw["model"]["deploy"], raw["model"]["weights"], raw["model"]["synset_words"]]
    paths += [raw["preprocess"]["mean"]] if isinstance(raw["preprocess"]["mean"], str) else []
    assert text.count(f'"{models}') == len(paths), "every model file is on the models volume"
    for file in map(Path, paths):
        file.parent.mkdir(parents=True, exist_ok=True)
        file.touch()
    config_file = tmp_path / "gre.toml"
    config_file.write_text(local)
    return load_config(config_file, environ)


def container_env(objects: tuple[Obj, ...]) -> dict[str, str]:
    env = container(one(objects, "Deployment", "gre")).get("env", [])
    return {e["name"]: e["value"] for e in env}


@pytest.mark.parametrize("app", APPS)
def test_pod_config_loads_with_gres_loader(app: str, tmp_path: Path) -> None:
    objects = render(app)
    config = pod_config(objects, tmp_path, container_env(objects))
    gre = container(one(objects, "Deployment", "gre"))
    assert config.server.host == "0.0.0.0"  # reachable from the Service
    assert [p["containerPort"] for p in gre["ports"]] == [config.server.port]
    assert config.replicas.devices == [0]  # the one GPU the device plugin gives the pod
    assert config.model.engine != "null"
    assert gre["command"] == ["gre", "serve", "--config", "/etc/gre/gre.toml"]
    assert mount_path(gre, "config") == "/etc/gre"
    assert (K8S / "base/gre.toml").read_text() == config_text(objects)


def test_service_links_stay_off_because_gre_reads_gre_port(tmp_path: Path) -> None:
    """Kubernetes sets GRE_PORT=tcp://IP:PORT in pods for a Service named gre: gre would read
    it as server.port and refuse to start, hence enableServiceLinks: false."""
    objects = render("base")
    assert one(objects, "Service", "gre")
    assert (
        one(objects, "Deployment", "gre")["spec"]["template"]["spec"]["enableServiceLinks"] is False
    )
    with pytest.raises(ConfigError, match=r"GRE_PORT: server\.port"):
        pod_config(objects, tmp_path, {"GRE_PORT": "tcp://10.96.0.10:8000"})


@pytest.mark.parametrize("app", APPS)
def test_probes_and_ports(app: str) -> None:
    objects = render(app)
    gre = container(one(objects, "Deployment", "gre"))
    port = config_port = tomllib.loads(config_text(objects))["server"]["port"]
    readiness, liveness = gre["readinessProbe"]["httpGet"], gre["livenessProbe"]["httpGet"]
    assert readiness["path"] == "/readyz"
    assert liveness["path"] == "/healthz"
    assert port_number(gre, readiness["port"]) == port_number(gre, liveness["port"]) == port
    service = one(objects, "Service", "gre")
    (service_port,) = service["spec"]["ports"]
    assert port_number(gre, service_port["targetPort"]) == config_port
    annotations = one(objects, "Deployment", "gre")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(config_port)
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("app", APPS)
def test_grace_period_outlasts_prestop_and_drain(app: str) -> None:
    objects = render(app)
    deployment = one(objects, "Deployment", "gre")
    pod = deployment["spec"]["template"]["spec"]
    pre_stop = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    sleep_s = float(pre_stop[1])
    assert 0 < sleep_s <= 15
    drain_s = tomllib.loads(config_text(objects))["server"]["drain_timeout_s"]
    # The kubelet's SIGKILL comes terminationGracePeriodSeconds after the preStop began.
    assert pod["terminationGracePeriodSeconds"] >= sleep_s + drain_s + 5


@pytest.mark.parametrize("app", APPS)
def test_one_gpu_per_pod(app: str) -> None:
    deployment = one(render(app), "Deployment", "gre")
    resources = container(deployment)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] in (1, "1")
    assert resources.get("requests", {}).get("nvidia.com/gpu", 1) in (1, "1")
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"


@pytest.mark.parametrize("app", APPS)
def test_config_changes_roll_the_pods(app: str) -> None:
    objects = render(app)
    (configmap,) = [o for o in objects if o["kind"] == "ConfigMap"]
    name = configmap["metadata"]["name"]
    assert re.fullmatch(r"gre-config-[a-z0-9]{10}", name), "named after its content's hash"
    assert volume(one(objects, "Deployment", "gre"), "config")["configMap"]["name"] == name


@pytest.mark.parametrize("app", APPS)
def test_selectors_pick_the_server_pods_only(app: str) -> None:
    objects = render(app)
    pod_labels = one(objects, "Deployment", "gre")["spec"]["template"]["metadata"]["labels"]
    job_labels = one(objects, "Job", "gre-fetch-models")["spec"]["template"]["metadata"]["labels"]
    selectors = [
        one(objects, "Deployment", "gre")["spec"]["selector"]["matchLabels"],
        one(objects, "PodDisruptionBudget", "gre")["spec"]["selector"]["matchLabels"],
        one(objects, "Service", "gre")["spec"]["selector"],
    ]
    for selector in selectors:
        assert selector.items() <= pod_labels.items()
        assert not selector.items() <= job_labels.items()


@pytest.mark.parametrize("app", APPS)
def test_everything_in_the_gre_namespace(app: str) -> None:
    objects = render(app)
    assert one(objects, "Namespace", "gre")
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {"gre"}


def test_model_files_are_where_gre_fetch_puts_them() -> None:
    objects = render("base")
    raw = tomllib.loads(config_text(objects))
    name = raw["model"]["name"]
    deployment, job = one(objects, "Deployment", "gre"), one(objects, "Job", "gre-fetch-models")
    models = PurePosixPath(mount_path(container(deployment), "models"))
    files = [raw["model"][k] for k in ("deploy", "weights", "synset_words")]
    files.append(raw["preprocess"]["mean"])
    assert {PurePosixPath(f).parent for f in files} == {models / name}
    assert {PurePosixPath(f).name for f in files} == set(load_manifest().models[name].files)
    (fetch,) = job["spec"]["template"]["spec"]["containers"]
    models_at = mount_path(fetch, "models")
    assert fetch["command"] == ["gre", "fetch", name, "--dir", models_at]
    assert PurePosixPath(models_at) == models
    assert fetch["image"] == container(deployment)["image"]
    claims = {volume(o, "models")["persistentVolumeClaim"]["claimName"] for o in (deployment, job)}
    pvc = one(objects, "PersistentVolumeClaim")
    assert claims == {pvc["metadata"]["name"]}
    assert "ReadWriteMany" in pvc["spec"]["accessModes"], "pods on several nodes mount it"
    (read_only,) = [m for m in container(deployment)["volumeMounts"] if m["name"] == "models"]
    assert read_only["readOnly"] is True


# --- autoscaling -------------------------------------------------------------------------------


@functools.cache
def exported_series() -> frozenset[str]:
    """The sample names gre's /metrics exposes (histograms as _bucket, _sum, _count)."""
    text = generate_latest(Metrics(32).registry).decode()
    return frozenset(s.name for f in text_string_to_metric_families(text) for s in f.samples)


def metric_names(promql: str) -> set[str]:
    return set(re.findall(r"\bgre_[a-z0-9_]+\b", promql))


def adapter_rules() -> list[Obj]:
    rules: list[Obj] = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    return rules


def test_exported_series_are_read_through_the_real_registry() -> None:
    assert {"gre_queue_depth", "gre_queue_duration_seconds_count"} <= exported_series()


@pytest.mark.parametrize("app", APPS)
def test_one_autoscaler_per_app(app: str) -> None:
    kinds = {o["kind"] for o in render(app)}
    assert kinds & {"HorizontalPodAutoscaler", "ScaledObject"} == AUTOSCALERS[app]


def test_hpa_scales_on_the_adapters_pod_metrics() -> None:
    objects = render("overlays/hpa")
    hpa = one(objects, "HorizontalPodAutoscaler", "gre")
    deployment = one(objects, "Deployment", "gre")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"],
    }  # fmt: skip
    assert {m["type"] for m in hpa["spec"]["metrics"]} == {"Pods"}
    used = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]}
    served = {rule["name"]["as"] for rule in adapter_rules()}
    assert used == served
    assert "gre_queue_depth" in used


@pytest.mark.parametrize("rule", adapter_rules(), ids=lambda rule: rule["name"]["as"])
def test_adapter_rule_reads_series_gre_exports(rule: Obj) -> None:
    series = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", rule["seriesQuery"])
    assert series is not None
    assert series[1] in exported_series()
    assert re.search(rule["name"]["matches"], series[1])
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"}, "pod": {"resource": "pod"},
    }  # fmt: skip
    query = rule["metricsQuery"]
    assert metric_names(query) <= exported_series()
    assert "<<.LabelMatchers>>" in query  # the adapter's per-pod selection
    assert "by (<<.GroupBy>>)" in query


def test_adapter_rules_are_queue_depth_and_queue_time() -> None:
    queries = {rule["name"]["as"]: rule["metricsQuery"] for rule in adapter_rules()}
    assert len(queries) == len(adapter_rules()) == 2
    assert metric_names(queries["gre_queue_depth"]) == set()  # <<.Series>>, the series itself
    assert metric_names(queries["gre_queue_duration_seconds_per_request"]) == {
        "gre_queue_duration_seconds_sum",
        "gre_queue_duration_seconds_count",
    }


def test_keda_trigger_on_queue_depth_matches_the_hpa() -> None:
    objects = render("overlays/keda")
    scaled = one(objects, "ScaledObject", "gre")
    deployment = one(objects, "Deployment", "gre")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger.get("metricType", "AverageValue") == "AverageValue"  # threshold per pod
    query = trigger["metadata"]["query"]
    assert metric_names(query) == {"gre_queue_depth"} <= exported_series()
    assert re.findall(r'namespace="([^"]*)"', query) == [deployment["metadata"]["namespace"]]
    hpa = one(render("overlays/hpa"), "HorizontalPodAutoscaler", "gre")["spec"]
    (depth,) = [m for m in hpa["metrics"] if m["pods"]["metric"]["name"] == "gre_queue_depth"]
    assert float(trigger["metadata"]["threshold"]) == float(depth["pods"]["target"]["averageValue"])
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (
        hpa["minReplicas"],
        hpa["maxReplicas"],
    )


# --- the image ---------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """deploy/Dockerfile's instructions as (NAME, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "deploy/Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (name.upper(), args.strip())
        for name, _, args in (line.partition(" ") for line in lines if line and line[0] != "#")
    ]


def test_dockerfile_builds_what_the_manifests_run() -> None:
    """It cannot be built here (no registry but PyPI's and Debian's), so this checks that it
    says what the pod relies on: user, port, the gre command, the engine's extra."""
    steps = dockerfile()
    values: dict[str, list[str]] = {}
    for name, args in steps:
        values.setdefault(name, []).append(args)
    assert steps[0][0] == "FROM"
    assert values["FROM"] == ["debian:bookworm-slim"]
    objects = render("base")
    deployment, job = one(objects, "Deployment", "gre"), one(objects, "Job", "gre-fetch-models")
    users = {
        o["spec"]["template"]["spec"]["securityContext"]["runAsUser"] for o in (deployment, job)
    }
    assert values["USER"] == [str(u) for u in users]
    raw = tomllib.loads(config_text(objects))
    assert values["EXPOSE"] == [str(raw["server"]["port"])]
    assert values["ENV"] == ["PATH=/opt/gre/.venv/bin:$PATH"]
    assert json.loads(values["ENTRYPOINT"][0]) == [container(deployment)["command"][0]]
    cmd = json.loads(values["CMD"][0])
    assert cmd[:3] == container(deployment)["command"][1:]
    assert cmd[3:] == ["--host", "0.0.0.0"]
    assert any(
        f"pip install --no-cache-dir '.[{raw['model']['engine']}]'" in r for r in values["RUN"]
    )
