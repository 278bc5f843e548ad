"""k8s/: kustomize renders base and both overlays; every object validates (built-in kinds
strictly against Kubernetes 1.30, Prometheus Operator kinds against the CRDs in ../shared/crds);
the properties the deployment promises hold. No cluster is involved (none can run here)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT.parent / "shared" / "crds"
OVERLAYS = ["base", "overlays/cpu", "overlays/gpu"]
OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "AlertmanagerConfig"}


class _Loader(yaml.SafeLoader):
    """kustomize prints AlertmanagerConfig's `matchType: =` unquoted: YAML 1.1's `=` value tag."""


_Loader.add_constructor(
    "tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node)
)


def render(target: str) -> list[dict]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "k8s" / target)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [d for d in yaml.load_all(out.stdout, Loader=_Loader) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    """The rendered overlays; only the tests that use them skip without kubectl."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (with kustomize) is not installed")
    return {t: render(t) for t in OVERLAYS}


def _python_patterns(node):
    """Kubernetes patterns are Go RE2: `^(?i)x` is fine there, Python wants `(?i)^x`."""
    if isinstance(node, dict):
        out = {k: _python_patterns(v) for k, v in node.items()}
        pat = out.get("pattern")
        if isinstance(pat, str) and "(?i)" in pat and not pat.startswith("(?i)"):
            out["pattern"] = "(?i)" + pat.replace("(?i)", "")
        return out
    if isinstance(node, list):
        return [_python_patterns(v) for v in node]
    return node


def crd_schemas() -> dict[tuple[str, str], dict]:
    schemas = {}
    for f in CRDS.glob("*.yaml"):
        crd = yaml.load(f.read_text(), Loader=_Loader)
        for v in crd["spec"]["versions"]:
            key = (crd["spec"]["names"]["kind"], f"{crd['spec']['group']}/{v['name']}")
            schemas[key] = _python_patterns(v["schema"]["openAPIV3Schema"])
    return schemas


def find(objs: list[dict], kind: str, name: str) -> dict:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


@pytest.mark.parametrize("target", OVERLAYS)
def test_builtin_kinds_validate_strictly_against_kubernetes_1_30(rendered, target) -> None:
    builtin = [o for o in rendered[target] if o["kind"] not in OPERATOR_KINDS]
    assert len(builtin) > 15
    for obj in builtin:
        kubernetes_validate.validate(obj, "1.30", strict=True)


@pytest.mark.parametrize("target", OVERLAYS)
def test_operator_kinds_validate_against_their_crds(rendered, target) -> None:
    if not CRDS.is_dir():
        pytest.skip(f"{CRDS} not found: the Prometheus Operator CRD check needs ../shared/crds")
    schemas = crd_schemas()
    ops = [o for o in rendered[target] if o["kind"] in OPERATOR_KINDS]
    assert {o["kind"] for o in ops} == {"ServiceMonitor", "PrometheusRule", "AlertmanagerConfig"}
    for obj in ops:
        jsonschema.validate(obj, schemas[(obj["kind"], obj["apiVersion"])])


def test_a_bad_object_fails_validation() -> None:
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "x"},
                "spec": {"replicas": "two"},
            },
            "1.30",
            strict=True,
        )


def gpu_limits(objs: list[dict]) -> list[str]:
    found = []
    for o in objs:
        spec = o.get("spec", {})
        pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get(
            "spec", {}
        ).get("template", {}).get("spec")
        for c in (pod or {}).get("containers", []):
            if "nvidia.com/gpu" in c.get("resources", {}).get("limits", {}):
                found.append(f"{o['kind']}/{o['metadata']['name']}")
    return found


def test_gpu_limits_only_in_the_gpu_overlay(rendered) -> None:
    assert gpu_limits(rendered["overlays/cpu"]) == []
    assert gpu_limits(rendered["overlays/gpu"]) == [
        "Deployment/slicewise",
        "CronJob/slicewise-retrain",
    ]
    svc = find(rendered["overlays/gpu"], "Deployment", "slicewise")["spec"]["template"]["spec"]
    assert svc["nodeSelector"] and svc["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert svc["containers"][0]["image"].startswith("slicewise-gpu")
    # the base's retrain Job template asks for a GPU
    assert gpu_limits(rendered["base"]) == ["CronJob/slicewise-retrain"]


@pytest.mark.parametrize("target", OVERLAYS)
def test_probes_non_root_and_read_only_root(rendered, target) -> None:
    dep = find(rendered[target], "Deployment", "slicewise")["spec"]["template"]["spec"]
    c = dep["containers"][0]
    assert (
        c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        and c["livenessProbe"]["httpGet"]["path"] == "/livez"
    )
    startup = c["startupProbe"]
    assert (
        startup["httpGet"]["path"] == "/readyz"
        and startup["periodSeconds"] * startup["failureThreshold"] >= 300
    )
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert dep["initContainers"][0]["name"] == "check-redis"
    for o in rendered[target]:
        spec = o.get("spec", {})
        pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get(
            "spec", {}
        ).get("template", {}).get("spec")
        if not pod:
            continue
        assert pod["securityContext"]["runAsNonRoot"] is True, o["metadata"]["name"]
        for ctr in pod.get("containers", []) + pod.get("initContainers", []):
            assert ctr["securityContext"]["readOnlyRootFilesystem"] is True, (
                o["metadata"]["name"],
                ctr["name"],
            )
            assert ctr["securityContext"]["allowPrivilegeEscalation"] is False
            assert "limits" in ctr["resources"]


def test_network_policies(rendered) -> None:
    objs = rendered["base"]
    deny = find(objs, "NetworkPolicy", "default-deny-ingress")
    assert deny["spec"]["podSelector"] == {} and "ingress" not in deny["spec"]
    svc = find(objs, "NetworkPolicy", "slicewise-service-ingress")["spec"]
    assert svc["ingress"] == [{"ports": [{"port": 3000, "protocol": "TCP"}]}]
    redis_np = find(objs, "NetworkPolicy", "slicewise-redis-ingress")["spec"]["ingress"][0]
    assert redis_np["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "slicewise"}}}
    ]
    # every slicewise pod carries the label the Redis policy admits
    for o in objs:
        if o["kind"] in {"Deployment", "StatefulSet"}:
            assert (
                o["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"]
                == "slicewise"
            )


def test_hpa_uses_the_adapter_metric(rendered) -> None:
    objs = rendered["base"]
    hpa = find(objs, "HorizontalPodAutoscaler", "slicewise")["spec"]["metrics"][0]
    rules = yaml.safe_load(
        find(objs, "ConfigMap", "slicewise-prometheus-adapter-rules")["data"]["rules.yaml"]
    )
    assert (
        hpa["pods"]["metric"]["name"]
        == rules["rules"][0]["name"]["as"]
        == "slicewise_requests_in_progress"
    )


def test_rules_and_dashboards_equal_monitoring_sources(rendered) -> None:
    import json

    objs = rendered["base"]
    rule = find(objs, "PrometheusRule", "slicewise")
    assert (
        rule["spec"]["groups"]
        == yaml.safe_load((ROOT / "monitoring/prometheus/rules.yml").read_text())["groups"]
    )
    for path in (ROOT / "monitoring/grafana/dashboards").glob("*.json"):
        cm = find(objs, "ConfigMap", f"slicewise-dashboard-{path.stem}")
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(cm["data"][path.name]) == json.loads(path.read_text())


def test_generated_files_are_up_to_date() -> None:
    sys.path.insert(0, str(ROOT / "k8s"))
    import generate

    for name, text in generate.render().items():
        assert (ROOT / "k8s/base/generated" / name).read_text() == text, (
            f"run python k8s/generate.py ({name} is stale)"
        )
