"""The deployment files are valid and wired to each other and to the service's settings.

No Docker engine or cluster runs where the tests run, so everything is checked statically:

- Kubernetes: every kustomization (base, overlays/dev, overlays/production) is rendered with
  ``kubectl kustomize``; every built-in resource is validated against the Kubernetes OpenAPI
  schemas (``kubernetes-validate``, strict: an unknown field is an error) and the KEDA
  ScaledObject against KEDA's CRD schema (tests/fixtures/keda), with unknown fields refused as
  the API server's pruning would silently drop them. Then the wiring: probes and ports against
  the settings' defaults, the rules ConfigMap that must update in place for hot reload, the
  secrets the routing file names, KEDA's consumer group, topic and replica bounds.
- Compose: deploy/compose.yaml against the Compose Specification schema (tests/fixtures/compose),
  then mount sources, dependencies, pinned images, secrets and the Prometheus/Grafana wiring.
- Dockerfile: parsed with ``dockerfile-parse``: stages, pinned base, non-root user,
  HEALTHCHECK, EXPOSE, entrypoint, the rules path, and a build context that holds every package.

``kubectl`` missing skips the Kubernetes tests, unless SPENDWARDEN_TEST_REQUIRE_KUBECTL=1.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import shlex
import subprocess
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from spendwarden.rules.loader import load_ruleset
from spendwarden.settings import Settings
from tooling import require_tool

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUSTOMIZE = DEPLOY / "kubernetes"
KUSTOMIZATIONS = ["base", "overlays/dev", "overlays/production"]
FIXTURES = ROOT / "tests" / "fixtures"
KEDA_CRD = FIXTURES / "keda" / "scaledobjects.keda.sh.yaml"
COMPOSE_SCHEMA = FIXTURES / "compose" / "compose_spec.json"
COMPOSE_SCHEMA_SHA256 = "0dc04bd346dcfee1b1419628fff79937bbf076925f298f272a2b490e2b112bac"  # see its README
# The oldest Kubernetes minor these manifests target and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")

WORKER_PORT = Settings.model_fields["http_port"].default
ROUTER_PORT = Settings.model_fields["router_http_port"].default
SETTING_ENV_NAMES = {f"SPENDWARDEN_{name.upper()}" for name in Settings.model_fields} | {"SPENDWARDEN_CONFIG"}


def image_is_pinned(image: str) -> bool:
    """A digest, or a tag with a version number in it; never `latest` or no tag at all."""
    name, _, digest = image.partition("@")
    if digest:
        return re.fullmatch(r"sha256:[0-9a-f]{64}", digest) is not None
    last = name.rsplit("/", 1)[-1]  # a registry's port is not a tag
    tag = last.partition(":")[2]
    return bool(re.search(r"\d", tag)) and "latest" not in tag


def unknown_setting_names(names: Any) -> list[str]:
    """SPENDWARDEN_* names that are not settings: pydantic-settings ignores them silently, so a
    typo (SPENDWARDEN_HTTP_PROT) would leave the default in force without a word."""
    return sorted(n for n in names if n.startswith("SPENDWARDEN_") and n not in SETTING_ENV_NAMES)


# ------------------------------------------------------------------------------------- Kubernetes
@cache
def _render(kustomization: str) -> tuple[dict[str, Any], ...]:
    kubectl = require_tool("kubectl", "SPENDWARDEN_TEST_REQUIRE_KUBECTL", "kubernetes-client")
    done = subprocess.run([kubectl, "kustomize", str(KUSTOMIZE / kustomization)],
                          check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"kubectl kustomize {kustomization} failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def rendered(kustomization: str) -> list[dict[str, Any]]:
    return list(_render(kustomization))


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def configmap(docs: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    """The ConfigMap generated as ``prefix`` (kustomize may append a hash suffix)."""
    found = [d for d in docs if d["kind"] == "ConfigMap" and re.fullmatch(rf"{prefix}(-[a-z0-9]{{10}})?",
                                                                          d["metadata"]["name"])]
    assert len(found) == 1, f"expected one ConfigMap {prefix}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    assert len(found) == 1, f"{deployment['metadata']['name']}: expected one container {name}"
    return found[0]


def pod_env(docs: list[dict[str, Any]], deployment: dict[str, Any], name: str) -> dict[str, str]:
    """The container's environment as the process sees it: envFrom ConfigMaps, then env values."""
    c = container(deployment, name)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        cm = one(docs, "ConfigMap", source["configMapRef"]["name"])
        env.update(cm.get("data", {}))
    env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
    return env


def volume_mounts(deployment: dict[str, Any], name: str) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Mount path -> (volumeMount, volume)."""
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"].get("volumes", [])}
    mounts = container(deployment, name).get("volumeMounts", [])
    return {m["mountPath"]: (m, volumes[m["name"]]) for m in mounts}


def structural_to_jsonschema(node: Any) -> Any:
    """A CRD's structural openAPIV3Schema as JSON Schema that refuses unknown fields.

    The API server prunes fields a structural schema does not declare (unless
    x-kubernetes-preserve-unknown-fields), so a misspelt field is dropped without an error and
    the setting silently never applies. Here it is an error: every object that lists its
    properties gets additionalProperties: false.
    """
    if isinstance(node, list):
        return [structural_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            continue
        if key == "properties":
            out[key] = {name: structural_to_jsonschema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "anyOf", "allOf", "oneOf", "not"):
            out[key] = structural_to_jsonschema(value)
        else:
            out[key] = value
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@cache
def keda_scaledobject_validator() -> jsonschema.protocols.Validator:
    crd = yaml.safe_load(KEDA_CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema = structural_to_jsonschema(version["schema"]["openAPIV3Schema"])
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate_custom(doc: dict[str, Any]) -> list[str]:
    """Errors of a keda.sh ScaledObject; its metadata is checked as ObjectMeta (strict)."""
    errors = [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
              for e in keda_scaledobject_validator().iter_errors(doc)]
    probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc.get("metadata", {})}
    try:
        kubernetes_validate.validate(probe, KUBERNETES_VERSIONS[-1], strict=True)
    except kubernetes_validate.ValidationError as exc:
        errors.append(f"metadata: {exc.message}")
    return errors


CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject"): validate_custom}

# Trigger metadata is a free map of strings in the CRD, and KEDA ignores keys it does not know:
# a misspelt optional key (allowIdleConsumer) would silently keep the default. The parameters of
# KEDA's kafka scaler (https://keda.sh/docs/2.16/scalers/apache-kafka/); extend when using more.
KAFKA_SCALER_KEYS = {
    "bootstrapServers", "consumerGroup", "topic", "lagThreshold", "activationLagThreshold",
    "offsetResetPolicy", "allowIdleConsumers", "scaleToZeroOnInvalidOffset", "excludePersistentLag",
    "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions", "partitionLimitation", "version",
    "sasl", "tls", "unsafeSsl",
}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_resource_matches_its_schema_with_no_unknown_field(kustomization: str) -> None:
    """Built-in kinds against the Kubernetes OpenAPI schemas of each target version (strict), the
    ScaledObject against KEDA's CRD; a misspelt field anywhere fails."""
    docs = rendered(kustomization)
    assert docs, f"{kustomization} renders nothing"
    errors = []
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        custom = CUSTOM_KINDS.get((doc["apiVersion"], doc["kind"]))
        if custom is not None:
            errors += [f"{where}: {e}" for e in custom(doc)]
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(map(str, exc.path)) or "(root)"
                errors.append(f"{where} (Kubernetes {version}): {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError:
                errors.append(f"{where}: {doc['apiVersion']} is not a Kubernetes {version} API "
                              "and has no CRD schema in tests/fixtures")
    assert not errors, "\n".join(errors)


def test_the_keda_crd_refuses_unknown_fields() -> None:
    """The converted CRD schema is strict where the structural schema is, and open where it is
    open (trigger metadata is a map of strings)."""
    validator = keda_scaledobject_validator()
    trigger = {"type": "kafka", "metadata": {"any": "1"}}
    good = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
            "spec": {"scaleTargetRef": {"name": "w"}, "triggers": [trigger]}}
    assert not list(validator.iter_errors(good))
    typo = json.loads(json.dumps(good))
    typo["spec"]["maxReplicaCont"] = 3
    assert any("maxReplicaCont" in e.message for e in validator.iter_errors(typo))


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_probes_and_ports_are_the_services_own(kustomization: str) -> None:
    """Readiness on /readyz and liveness on /healthz, on the port each process serves by
    default (settings http_port / router_http_port), which the pod's env also names."""
    docs = rendered(kustomization)
    for deployment_name, name, port, port_env in (
            ("spendwarden-worker", "worker", WORKER_PORT, "SPENDWARDEN_HTTP_PORT"),
            ("spendwarden-router", "router", ROUTER_PORT, "SPENDWARDEN_ROUTER_HTTP_PORT")):
        deployment = one(docs, "Deployment", deployment_name)
        c = container(deployment, name)
        assert c["args"] == [name]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"http": port}
        assert pod_env(docs, deployment, name).get(port_env, str(port)) == str(port)
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(port)
        security = c["securityContext"]
        assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == dockerfile_uid()
        service = one(docs, "Service", deployment_name)
        assert service["spec"]["ports"][0]["targetPort"] == "http"
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        pdb = one(docs, "PodDisruptionBudget", deployment_name)
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert image_is_pinned(c["image"]), c["image"]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_environment_names_only_settings(kustomization: str) -> None:
    """Every SPENDWARDEN_* variable given to a pod is a real setting."""
    docs = rendered(kustomization)
    for deployment_name, name in (("spendwarden-worker", "worker"), ("spendwarden-router", "router")):
        deployment = one(docs, "Deployment", deployment_name)
        assert unknown_setting_names(pod_env(docs, deployment, name)) == []
        assert unknown_setting_names(e["name"] for e in container(deployment, name).get("env", [])) == []


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_rules_are_a_configmap_the_worker_reloads_in_place(kustomization: str) -> None:
    """The rules ConfigMap keeps its name (no hash suffix) so an edit updates it in place and the
    kubelet swaps the files under the running worker; mounted as a directory (a subPath mount
    never sees updates) where the image's SPENDWARDEN_RULES_DIR points; its content is the
    playbook pack and loads."""
    docs = rendered(kustomization)
    rules = one(docs, "ConfigMap", "spendwarden-rules")
    worker = one(docs, "Deployment", "spendwarden-worker")
    image_default = dockerfile_env()["SPENDWARDEN_RULES_DIR"]
    rules_dir = pod_env(docs, worker, "worker").get("SPENDWARDEN_RULES_DIR", image_default)
    mount, volume = volume_mounts(worker, "worker")[rules_dir]
    assert volume["configMap"]["name"] == "spendwarden-rules"
    assert "subPath" not in mount and mount["readOnly"]
    assert rules["data"] == {"rules.yaml": (ROOT / "rules/packs/playbook/rules.yaml").read_text()}
    assert load_ruleset(KUSTOMIZE / "base" / "rules").rules


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_secret_the_routing_file_names_reaches_the_router(kustomization: str) -> None:
    """The routing ConfigMap is deploy/routing.example.yaml; each {file: ...} it names is a key of
    the mounted Secret and each {env: ...} is in the router's env; the Redis password file of
    both processes is a mounted Secret key too."""
    docs = rendered(kustomization)
    routing = one(docs, "ConfigMap", "spendwarden-routing")
    example = (DEPLOY / "routing.example.yaml").read_text()
    assert routing["data"] == {"routing.yaml": example}
    router = one(docs, "Deployment", "spendwarden-router")
    env = pod_env(docs, router, "router")
    mounts = volume_mounts(router, "router")
    routing_file = Path(env["SPENDWARDEN_ROUTING_FILE"])
    assert mounts[str(routing_file.parent)][1]["configMap"]["name"] == "spendwarden-routing"

    files, envs = secret_references(yaml.safe_load(example))
    env_names = {e["name"] for e in container(router, "router")["env"]}
    assert envs and envs <= env_names, f"router env lacks {envs - env_names}"
    assert files and all(mounted_secret_key(mounts, f) for f in files), files
    for deployment, name in ((router, "router"), (one(docs, "Deployment", "spendwarden-worker"), "worker")):
        password_file = pod_env(docs, deployment, name)["SPENDWARDEN_REDIS_PASSWORD_FILE"]
        assert mounted_secret_key(volume_mounts(deployment, name), password_file) == "redis-password"


def secret_references(node: Any) -> tuple[set[str], set[str]]:
    """({file: ...} paths, {env: ...} names) anywhere in a routing file."""
    files: set[str] = set()
    envs: set[str] = set()
    if isinstance(node, dict):
        if set(node) == {"file"}:
            files.add(node["file"])
        elif set(node) == {"env"}:
            envs.add(node["env"])
        for value in node.values():
            f, e = secret_references(value)
            files |= f
            envs |= e
    elif isinstance(node, list):
        for value in node:
            f, e = secret_references(value)
            files |= f
            envs |= e
    return files, envs


def mounted_secret_key(mounts: dict[str, tuple[dict[str, Any], dict[str, Any]]], path: str) -> str | None:
    """The Secret key a file path inside the container shows, if a Secret volume provides it."""
    for mount_path, (_, volume) in mounts.items():
        if "secret" in volume and str(Path(path).parent) == mount_path:
            items = {i["path"]: i["key"] for i in volume["secret"].get("items", [])}
            return items.get(Path(path).name)
    return None


def test_keda_scales_the_workers_group_within_the_partitions() -> None:
    """The ScaledObject watches the worker's own consumer group (its app id) on the counted topic
    at the worker's broker, never asks for more workers than partitions, and owns the replica
    count (the Deployment sets none, or every apply would reset it and rebalance)."""
    docs = rendered("overlays/production")
    scaled = one(docs, "ScaledObject", "spendwarden-worker")
    worker = one(docs, "Deployment", "spendwarden-worker")
    env = pod_env(docs, worker, "worker")
    spec = scaled["spec"]
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "spendwarden-worker"}
    assert spec["scaleTargetRef"] == target
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert set(meta) <= KAFKA_SCALER_KEYS, f"unknown kafka scaler keys: {set(meta) - KAFKA_SCALER_KEYS}"
    assert meta["consumerGroup"] == env["SPENDWARDEN_APP_ID"]
    assert meta["topic"] == env["SPENDWARDEN_COST_TOPIC"]
    assert meta["bootstrapServers"] == env["SPENDWARDEN_KAFKA_BOOTSTRAP"]
    assert int(meta["lagThreshold"]) > 0
    partitions = int(env["SPENDWARDEN_PARTITIONS"])
    assert spec["minReplicaCount"] >= 2, "one worker's failure must leave another counting"
    assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["maxReplicaCount"] <= partitions, "a worker beyond the partition count owns nothing"
    assert "replicas" not in worker["spec"]
    resources = container(worker, "worker")["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"], "memory is state: request=limit"


# ----------------------------------------------------------------------------------------- Compose
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def compose_errors(doc: dict[str, Any]) -> list[str]:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in validator.iter_errors(doc)]


def test_compose_file_matches_the_compose_specification() -> None:
    """deploy/compose.yaml against the vendored schema (unchanged since it was vendored), which
    refuses unknown keys: a misspelt one fails."""
    assert hashlib.sha256(COMPOSE_SCHEMA.read_bytes()).hexdigest() == COMPOSE_SCHEMA_SHA256
    assert compose_errors(compose()) == []
    typo = compose()
    worker = typo["services"]["worker"]
    worker["depend_on"] = worker.pop("depends_on")
    assert any("depend_on" in e for e in compose_errors(typo))


def mounts_of(service: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            kind = "bind" if source.startswith((".", "/")) else "volume"
            yield {"type": kind, "source": source, "target": target}
        else:
            yield volume


def test_compose_services_are_wired() -> None:
    """Every bind-mount source exists in the repository, every named volume and secret is
    declared, secret files live in the git-ignored deploy/secrets, every dependency names a
    service (a health condition one with a healthcheck), and every image is pinned."""
    doc = compose()
    services = doc["services"]
    errors = []
    for name, service in services.items():
        for mount in mounts_of(service):
            if mount["type"] == "bind":
                if not (DEPLOY / mount["source"]).exists():
                    errors.append(f"{name}: mount source {mount['source']} does not exist")
            elif mount["source"] not in (doc.get("volumes") or {}):
                errors.append(f"{name}: volume {mount['source']} is not declared")
        for secret in service.get("secrets", []):
            secret_name = secret if isinstance(secret, str) else secret["source"]
            if secret_name not in doc.get("secrets", {}):
                errors.append(f"{name}: secret {secret_name} is not declared")
        for env_file in service.get("env_file", []):
            if not (DEPLOY / env_file).resolve().is_relative_to(DEPLOY / "secrets"):
                errors.append(f"{name}: env_file {env_file} outside deploy/secrets")
        depends = service.get("depends_on", {})
        for other in depends:
            if other not in services:
                errors.append(f"{name}: depends on unknown service {other}")
            elif (isinstance(depends, dict) and depends[other]["condition"] == "service_healthy"
                  and "healthcheck" not in services[other] and "build" not in services[other]):
                errors.append(f"{name}: waits for {other} to be healthy, which has no healthcheck")
        image = service.get("image", "")
        if not image_is_pinned(image):
            errors.append(f"{name}: image {image!r} is not pinned to a version")
        if name != "topics" and "healthcheck" not in service and "build" not in service:
            errors.append(f"{name}: no healthcheck")
        unknown = unknown_setting_names(service.get("environment", {}))
        errors += [f"{name}: {n} is not a setting" for n in unknown]
    for secret in doc.get("secrets", {}).values():
        if not (DEPLOY / secret["file"]).resolve().is_relative_to(DEPLOY / "secrets"):
            errors.append(f"secret file {secret['file']} outside deploy/secrets")
    ignored = (DEPLOY / "secrets" / ".gitignore").read_text().splitlines()
    assert "*" in ignored, "deploy/secrets must be git-ignored"
    assert not errors, "\n".join(errors)


def test_compose_spendwarden_services_reach_kafka_redis_and_their_secrets() -> None:
    """The worker and router name compose services for Kafka and Redis, read the Redis password
    from a secret they mount, publish the settings' default ports, and the router reads the
    example routing file with every secret it names."""
    doc = compose()
    services = doc["services"]
    for name, port in (("worker", WORKER_PORT), ("router", ROUTER_PORT)):
        service = services[name]
        env = service["environment"]
        assert env["SPENDWARDEN_KAFKA_BOOTSTRAP"].split(":")[0] in services
        assert env["SPENDWARDEN_REDIS_URL"].split("//")[1].split(":")[0] in services
        password = Path(env["SPENDWARDEN_REDIS_PASSWORD_FILE"])
        assert password.parent == Path("/run/secrets") and password.name in service["secrets"]
        assert service["command"] == [name]
        assert any(p.endswith(f":{port}:{port}") for p in service["ports"])
    router = services["router"]
    router_mounts = {m["target"]: m["source"] for m in mounts_of(router)}
    routing = router_mounts[router["environment"]["SPENDWARDEN_ROUTING_FILE"]]
    assert (DEPLOY / routing).resolve() == DEPLOY / "routing.example.yaml"
    files, _ = secret_references(yaml.safe_load((DEPLOY / routing).read_text()))
    assert {Path(f).name for f in files} <= set(router["secrets"])
    assert all(Path(f).parent == Path("/run/secrets") for f in files)
    rules_target = {m["target"] for m in mounts_of(services["worker"])}
    assert dockerfile_env()["SPENDWARDEN_RULES_DIR"] in rules_target


def test_compose_prometheus_and_grafana_are_wired() -> None:
    """Prometheus loads the shared rules from where compose mounts them and scrapes compose
    services on the processes' ports; Grafana's dashboard provider reads the folder compose
    mounts and its datasource is the compose Prometheus."""
    doc = compose()
    services = doc["services"]
    prometheus_mounts = {m["target"]: m["source"] for m in mounts_of(services["prometheus"])}
    config_source = prometheus_mounts["/etc/prometheus/prometheus.yml"]
    assert (DEPLOY / config_source).resolve() == DEPLOY / "prometheus" / "compose-prometheus.yml"
    config = yaml.safe_load((DEPLOY / config_source).read_text())
    for pattern in config["rule_files"]:
        folder = str(Path(pattern).parent)
        assert folder in prometheus_mounts, f"rule_files {pattern}: {folder} is not mounted"
        assert list((DEPLOY / prometheus_mounts[folder]).glob(Path(pattern).name)), f"no rules for {pattern}"
    targets = {job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
               for job in config["scrape_configs"]}
    assert targets["spendwarden-worker"] == [f"worker:{WORKER_PORT}"]
    assert targets["spendwarden-router"] == [f"router:{ROUTER_PORT}"]
    for job, hosts in targets.items():
        for target in hosts:
            host = target.split(":")[0]
            assert host in services or (host == "localhost" and job == "prometheus"), f"{job}: {target}"

    grafana_mounts = {m["source"]: m["target"] for m in mounts_of(services["grafana"]) if m["type"] == "bind"}
    provisioning = DEPLOY / "grafana" / "provisioning"
    assert grafana_mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    (provider,) = yaml.safe_load((provisioning / "dashboards/spendwarden.yaml").read_text())["providers"]
    assert provider["options"]["path"] == grafana_mounts["./grafana/dashboards"]
    datasources = yaml.safe_load((provisioning / "datasources/prometheus.yaml").read_text())["datasources"]
    urls = {d["url"] for d in datasources if d["type"] == "prometheus"}
    assert urls == {"http://prometheus:9090"} and "prometheus" in services


# -------------------------------------------------------------------------------------- Dockerfile
def dockerfile_stages() -> list[list[dict[str, Any]]]:
    """The Dockerfile's instructions, one list per stage (FROM starts one)."""
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    stages: list[list[dict[str, Any]]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def of(stage: list[dict[str, Any]], name: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == name]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for value in of(dockerfile_stages()[-1], "ENV"):
        env.update(part.split("=", 1) for part in shlex.split(value))
    return env


def dockerfile_uid() -> int:
    (user,) = of(dockerfile_stages()[-1], "USER")
    return int(user.split(":")[0])


def copies(stage: list[dict[str, Any]]) -> list[tuple[list[str], list[str], str]]:
    """(flags, sources, destination) of each COPY."""
    out = []
    for value in of(stage, "COPY"):
        words = shlex.split(value)
        flags = [w for w in words if w.startswith("--")]
        paths = [w for w in words if not w.startswith("--")]
        out.append((flags, paths[:-1], paths[-1]))
    return out


def test_dockerfile_is_multi_stage_on_a_pinned_base() -> None:
    """A builder and a runtime stage, both on the same python:3.11.<patch>-slim-bookworm; the
    runtime copies the builder's venv and installs nothing (no compilers in the image)."""
    stages = dockerfile_stages()
    assert len(stages) >= 2
    bases = [of(stage, "FROM")[0].split() for stage in stages]
    for base in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base[0]), base
        assert len(base) == 3 and base[1].upper() == "AS", f"unnamed stage: {base}"
    assert len({base[0] for base in bases}) == 1, "builder and runtime must share the base (venv symlinks)"
    runtime = stages[-1]
    assert (["--from=builder"], ["/opt/venv"], "/opt/venv") in copies(runtime)
    for command in of(runtime, "RUN"):
        assert not re.search(r"apt-get|apk |pip install|gcc|build-essential", command), command


def test_dockerfile_runs_as_a_fixed_non_root_user() -> None:
    uid = dockerfile_uid()
    assert uid >= 1000
    (create_user,) = [r for r in of(dockerfile_stages()[-1], "RUN") if "useradd" in r]
    assert f"--uid {uid}" in create_user


def test_dockerfile_runs_spendwarden_with_a_healthcheck_on_its_port() -> None:
    """ENTRYPOINT spendwarden (the console script), CMD worker, both processes' default ports
    exposed and reachable (HTTP_HOST 0.0.0.0), and a HEALTHCHECK asking /healthz with Python
    (slim images have no curl)."""
    runtime = dockerfile_stages()[-1]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "spendwarden" in pyproject["project"]["scripts"]
    assert [json.loads(v) for v in of(runtime, "ENTRYPOINT")] == [["spendwarden"]]
    assert [json.loads(v) for v in of(runtime, "CMD")] == [["worker"]]
    exposed = {int(p) for value in of(runtime, "EXPOSE") for p in value.split()}
    assert exposed == {WORKER_PORT, ROUTER_PORT}
    (healthcheck,) = of(runtime, "HEALTHCHECK")
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3:])
    assert command[0] == "python" and "/healthz" in command[-1]
    assert str(WORKER_PORT) in command[-1] and str(ROUTER_PORT) in command[-1]
    compile(command[-1], "HEALTHCHECK", "exec")
    env = dockerfile_env()
    assert env["SPENDWARDEN_HTTP_HOST"] == "0.0.0.0"
    assert unknown_setting_names(env) == []


def test_dockerfile_ships_rules_where_the_setting_points() -> None:
    """SPENDWARDEN_RULES_DIR is the folder the rules are copied to, and those rules load."""
    rules_dir = dockerfile_env()["SPENDWARDEN_RULES_DIR"]
    copied = [(sources, dest) for flags, sources, dest in copies(dockerfile_stages()[-1])
              if not flags and str(Path(dest).parent) == rules_dir]
    assert copied, f"nothing copied into {rules_dir}"
    for sources, _ in copied:
        for source in sources:
            assert load_ruleset(ROOT / source).rules


def dockerignore_excludes(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context (last matching pattern wins;
    a pattern matching a parent folder matches what is inside)."""
    excluded = False
    parts = Path(path).parts
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatchcase(prefix, pattern) and prefix.count("/") == pattern.count("/")
                      for prefix in prefixes)
        if hit:
            excluded = not negate
    return excluded


def test_build_context_holds_every_package_and_nothing_private() -> None:
    """The builder copies every package folder pyproject.toml builds (and the files its build
    reads); every COPY source exists and is in the context; .venv, .git, tests and secrets are not."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_dirs = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    builder = dockerfile_stages()[0]
    sources = {s.rstrip("/") for flags, srcs, _ in copies(builder) if not flags for s in srcs}
    assert package_dirs | {"pyproject.toml", pyproject["project"]["readme"]} <= sources
    for stage in dockerfile_stages():
        for flags, srcs, _ in copies(stage):
            if any(f.startswith("--from") for f in flags):
                continue
            for source in srcs:
                assert (ROOT / source).exists(), source
                assert not dockerignore_excludes(source.rstrip("/")), f"{source} is outside the build context"
    for private in (".venv/bin/python", ".git/config", "tests/unit", "deploy/secrets/redis-password",
                    "streams/__pycache__/engine.cpython-311.pyc"):
        assert dockerignore_excludes(private), private


def test_the_image_installs_exact_versions_that_satisfy_pyproject() -> None:
    """deploy/constraints.txt pins every runtime dependency (and what they pull in) to one version
    inside pyproject.toml's range; the Dockerfile installs with it."""
    from packaging.requirements import Requirement

    pins = {}
    for line in (ROOT / "deploy" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for text in pyproject["project"]["dependencies"]:
        requirement = Requirement(text)
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} has no pin in deploy/constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name], str(requirement))
    assert "-c /tmp/constraints.txt" in (ROOT / "Dockerfile").read_text()
