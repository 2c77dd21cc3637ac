"""The Kubernetes manifests under deploy/kubernetes/ are valid and say what the docs say.

Every manifest is checked against the Kubernetes schemas (`kubernetes-validate`, strict: an
unknown field is an error) for the oldest and newest versions the package knows; the
Prometheus ServiceMonitors (a CRD those schemas lack) are checked against the Services they
select. The llama-swap configs inside the ConfigMaps are compiled with the real compiler, and
the scale-out front's peers must list exactly the models each GPU node serves.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from llama_swap.compiler.pipeline import compile_files, hashed_files
from llama_swap.compiler.plan import Plan

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S = REPO_ROOT / "deploy" / "kubernetes"
LAYOUTS = ("base", "scale-out")
IMAGES = {"llama-swap-py:proxy", "llama-swap-py:cpu"}  # the Containerfile's two targets
SCHEMAS = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
ENV = {"LLAMA_SWAP_NODE_KEY": "k8s-test-key"}

Doc = dict[str, Any]


def k8s_versions() -> list[str]:
    found = sorted(
        (tuple(int(p) for p in m.groups()), f"{m[1]}.{m[2]}.{m[3]}")
        for d in SCHEMAS.iterdir()
        if (m := re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)-local", d.name))
    )
    return sorted({found[0][1], found[-1][1]})


def kustomization(layout: str) -> Doc:
    data: Doc = yaml.safe_load((K8S / layout / "kustomization.yaml").read_text())
    return data


def documents(layout: str) -> list[Doc]:
    docs: list[Doc] = []
    for name in kustomization(layout)["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / layout / name).read_text()) if d]
    return docs


def all_documents() -> Iterator[tuple[str, Doc]]:
    for layout in LAYOUTS:
        for doc in documents(layout):
            yield f"{layout}/{doc['kind']}/{doc['metadata']['name']}", doc


def find(layout: str, kind: str, name: str | None = None) -> Doc:
    found = [d for d in documents(layout)
             if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (layout, kind, name, len(found))
    return found[0]


def workloads(layout: str) -> list[Doc]:
    return [d for d in documents(layout) if d["kind"] in ("Deployment", "DaemonSet")]


BUILTIN = [(label, doc) for label, doc in all_documents()
           if doc["kind"] != "ServiceMonitor"]


@pytest.mark.parametrize("version", k8s_versions())
@pytest.mark.parametrize(("label", "doc"), BUILTIN, ids=[label for label, _ in BUILTIN])
def test_every_manifest_is_valid_against_the_kubernetes_schema(
    label: str, doc: Doc, version: str
) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_kustomization_lists_every_manifest_of_its_folder(layout: str) -> None:
    listed = set(kustomization(layout)["resources"])
    present = {p.name for p in (K8S / layout).glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


@pytest.mark.parametrize("layout", LAYOUTS)
def test_service_monitors_select_a_service_and_name_its_port(layout: str) -> None:
    services = [d for d in documents(layout) if d["kind"] == "Service"]
    monitors = [d for d in documents(layout) if d["kind"] == "ServiceMonitor"]
    assert monitors
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        wanted = monitor["spec"]["selector"]["matchLabels"]
        chosen = [s for s in services if wanted.items() <= s["metadata"]["labels"].items()]
        assert len(chosen) == 1, monitor["metadata"]["name"]
        ports = {p["name"] for p in chosen[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
            assert set(endpoint) <= {"port", "path", "interval", "authorization"}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_services_and_disruption_budgets_select_pods_that_exist(layout: str) -> None:
    pod_labels = [w["spec"]["template"]["metadata"]["labels"] for w in workloads(layout)]
    for doc in documents(layout):
        if doc["kind"] == "Service":
            wanted = doc["spec"]["selector"]
        elif doc["kind"] == "PodDisruptionBudget":
            wanted = doc["spec"]["selector"]["matchLabels"]
        else:
            continue
        assert any(wanted.items() <= labels.items() for labels in pod_labels), doc["metadata"]


def containers(layout: str) -> Iterator[tuple[Doc, Doc]]:
    for workload in workloads(layout):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            yield workload, container


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_llama_swap_watches_config_mounted_as_directories(layout: str) -> None:
    for workload, container in containers(layout):
        args = container["args"]
        assert "--watch-config" in args
        assert "--config-dir" in args
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        config_mounts = [m for m in container["volumeMounts"] if "configMap" in volumes[m["name"]]]
        assert config_mounts
        for mount in config_mounts:
            assert "subPath" not in mount, "a subPath mount is never updated by the kubelet"
        config_dir = args[args.index("--config-dir") + 1]
        assert config_dir in {m["mountPath"] for m in config_mounts}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_probes_use_health_and_pods_run_unprivileged(layout: str) -> None:
    for workload, container in containers(layout):
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
        assert container["image"] in IMAGES
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        pod_security = workload["spec"]["template"]["spec"]["securityContext"]
        assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] != 0
        grace = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > 30  # above llama-swap's own shutdown timeout


def test_the_image_names_are_the_containerfile_targets_and_the_docs_use_them() -> None:
    containerfile = (REPO_ROOT / "Containerfile").read_text()
    docs = (REPO_ROOT / "docs" / "kubernetes.md").read_text()
    for image in IMAGES:
        target = {"proxy": "proxy", "cpu": "llama-server"}[image.split(":")[1]]
        assert re.search(rf"^FROM .* AS {target}$", containerfile, re.M)
        assert f"--target {target} -t {image}" in containerfile
        assert image in docs
    assert "registry.example/llama-swap-py" not in docs


def merge_patch(base: Any, patch: Any) -> Any:
    """A strategic merge as far as these manifests need it (lists of named items by name)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merge_patch(base[key], value) if key in base else value
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(
        isinstance(x, dict) and "name" in x for x in base + patch
    ):
        by_name = {x["name"]: x for x in base}
        for item in patch:
            by_name[item["name"]] = merge_patch(by_name.get(item["name"], {}), item)
        return list(by_name.values())
    return patch


@pytest.mark.parametrize("version", k8s_versions())
def test_the_gpu_component_adds_an_nvidia_gpu_to_the_base_deployment(version: str) -> None:
    component_dir = K8S / "components" / "nvidia-gpu"
    component = yaml.safe_load((component_dir / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"
    deployment = find("base", "Deployment", "llama-swap")
    patched = copy.deepcopy(deployment)
    for patch in component["patches"]:
        assert patch["target"] == {"kind": "Deployment", "name": "llama-swap"}
        patched = merge_patch(patched, yaml.safe_load((component_dir / patch["path"]).read_text()))
    kubernetes_validate.validate(patched, version, strict=True)
    limits = patched["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1 and limits["memory"]  # added, nothing lost
    assert "nvidia.com/gpu" not in str(deployment)


def compile_fragments(fragments: list[tuple[str, str]]) -> Plan:
    result = compile_files(hashed_files(fragments), env=ENV, strict=True)
    assert not result.warnings, result.warnings
    return result.plan


def config_map(layout: str, name: str) -> dict[str, str]:
    data: dict[str, str] = find(layout, "ConfigMap", name)["data"]
    return data


def test_the_base_config_compiles() -> None:
    data = config_map("base", "llama-swap-config")
    plan = compile_fragments(sorted(data.items()))
    assert sorted(plan.models) == ["nomic-embed", "qwen3-8b"]
    assert plan.models["qwen3-8b"].cmd[0] == "llama-server"  # on the cpu image's PATH


def node_plans() -> dict[str, Plan]:
    """Each GPU node's plan, assembled as the DaemonSet's arguments say."""
    daemonset = find("scale-out", "DaemonSet")
    args = daemonset["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:4] == ["--config", "/etc/llama-swap/nodes/$(NODE_NAME).yaml",
                        "--config-dir", "/etc/llama-swap/common"]
    common = sorted(config_map("scale-out", "llama-swap-common").items())
    plans = {}
    for key, text in config_map("scale-out", "llama-swap-nodes").items():
        plans[key.removesuffix(".yaml")] = compile_fragments([(key, text), *common])
    return plans


def test_every_gpu_node_config_compiles_and_requires_the_node_key() -> None:
    plans = node_plans()
    assert len(plans) >= 2
    for plan in plans.values():
        assert plan.models
        assert plan.settings.apiKeys == (ENV["LLAMA_SWAP_NODE_KEY"],)


def test_the_front_forwards_every_node_model_to_the_node_that_serves_it() -> None:
    front = compile_fragments(sorted(config_map("scale-out", "llama-swap-front").items()))
    assert not front.models
    nodes = node_plans()
    assert set(front.peers) == set(nodes)
    for name, peer in front.peers.items():
        assert set(peer.models) == set(nodes[name].models)
        assert peer.apiKey == ENV["LLAMA_SWAP_NODE_KEY"]
        assert peer.proxy.endswith(":8080")


def test_the_gpu_nodes_run_on_labelled_nodes_with_a_gpu_each() -> None:
    daemonset = find("scale-out", "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"llama-swap/gpu-node": "true"}
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["ports"][0]["hostPort"] == 8080
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
