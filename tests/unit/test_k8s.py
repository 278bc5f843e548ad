"""k8s/: kustomize renders base and both overlays; every object validates (built-in kinds
strictly against Kubernetes 1.30, Prometheus Operator kinds against the CRDs vendored in
k8s/crds); the properties the deployment promises hold. No cluster is involved (none can run
here). Only the tests that render with kustomize need `kubectl`; they skip without it."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "k8s" / "crds"
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
    schemas = crd_schemas()
    ops = [o for o in rendered[target] if o["kind"] in OPERATOR_KINDS]
    assert {o["kind"] for o in ops} == {"ServiceMonitor", "PrometheusRule", "AlertmanagerConfig"}
    for obj in ops:
        jsonschema.validate(obj, schemas[(obj["kind"], obj["apiVersion"])])


def test_generated_prometheus_rule_validates_against_the_vendored_crd() -> None:
    """Needs no kubectl: the generated PrometheusRule file against the CRD in the repository."""
    schemas = crd_schemas()
    assert {k for k, _ in schemas} == OPERATOR_KINDS - {"PodMonitor"}
    rule = yaml.load((ROOT / "k8s/base/generated/prometheusrule.yaml").read_text(), Loader=_Loader)
    schema = schemas[(rule["kind"], rule["apiVersion"])]
    jsonschema.validate(rule, schema)
    rule["spec"]["groups"][0]["rules"][0]["for"] = "two minutes"  # not a duration
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rule, schema)


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


def pod_specs(objs: list[dict]) -> list[tuple[str, dict]]:
    out = []
    for o in objs:
        spec = o.get("spec", {})
        pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get(
            "spec", {}
        ).get("template", {}).get("spec")
        if pod:
            out.append((f"{o['kind']}/{o['metadata']['name']}", pod))
    return out


def gpu_limits(objs: list[dict]) -> list[str]:
    found = []
    for name, pod in pod_specs(objs):
        for c in pod.get("containers", []):
            if "nvidia.com/gpu" in c.get("resources", {}).get("limits", {}):
                found.append(name)
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
    for name, pod in pod_specs(rendered[target]):
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for ctr in pod.get("containers", []) + pod.get("initContainers", []):
            assert ctr["securityContext"]["readOnlyRootFilesystem"] is True, (name, ctr["name"])
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


@pytest.mark.parametrize("target", OVERLAYS)
def test_pods_meet_the_restricted_pod_security_profile(rendered, target) -> None:
    """The namespace enforces `restricted`; every pod satisfies its rules (checked here the way
    Pod Security Admission checks them, field by field)."""
    ns = find(rendered[target], "Namespace", "slicewise")["metadata"]["labels"]
    assert ns["pod-security.kubernetes.io/enforce"] == "restricted"
    for name, pod in pod_specs(rendered[target]):
        psc = pod.get("securityContext", {})
        assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), name
        assert all("hostPath" not in v for v in pod.get("volumes", [])), name
        for ctr in pod.get("containers", []) + pod.get("initContainers", []):
            sc = ctr.get("securityContext", {})
            assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, name
            assert sc.get("runAsUser", psc.get("runAsUser", 1)) != 0, name
            seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {}))
            assert seccomp.get("type") in {"RuntimeDefault", "Localhost"}, name
            assert sc.get("allowPrivilegeEscalation") is False, name
            assert not sc.get("privileged", False), name
            assert "ALL" in sc["capabilities"]["drop"], name
            assert set(sc["capabilities"].get("add", [])) <= {"NET_BIND_SERVICE"}, name
            assert all("hostPort" not in p for p in ctr.get("ports", [])), name


@pytest.mark.parametrize("target", OVERLAYS)
def test_images_pinned_and_tokens_mounted_only_where_needed(rendered, target) -> None:
    for name, pod in pod_specs(rendered[target]):
        for ctr in pod.get("containers", []) + pod.get("initContainers", []):
            image = ctr["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), (name, image)
        needs_token = name == "Deployment/slicewise-webhook"  # it creates retrain Jobs
        assert pod.get("automountServiceAccountToken", True) is needs_token, name


def _env(ctr: dict) -> dict[str, dict]:
    return {e["name"]: e for e in ctr.get("env", [])}


def test_secrets_are_required_and_redis_has_a_password(rendered) -> None:
    objs = rendered["base"]
    svc = find(objs, "Deployment", "slicewise")["spec"]["template"]["spec"]
    token = _env(svc["containers"][0])["SLICEWISE_API_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token["key"] == "api-token" and not token.get("optional", False)
    assert find(objs, "ConfigMap", "slicewise-config")["data"]["SLICEWISE_REQUIRE_TOKEN"] == "1"
    redis_ctr = find(objs, "StatefulSet", "slicewise-redis")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert redis_ctr["args"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    assert _env(redis_ctr)["REDISCLI_AUTH"]["value"] == "$(REDIS_PASSWORD)"  # the probe
    assert "REDIS_URL" not in find(objs, "ConfigMap", "slicewise-config")["data"]
    for name, pod in pod_specs(objs):
        if name == "StatefulSet/slicewise-redis":
            continue
        for ctr in pod.get("containers", []) + pod.get("initContainers", []):
            env = _env(ctr)
            names = list(env)
            assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "redis-password"
            assert env["REDIS_URL"]["value"].startswith("redis://:$(REDIS_PASSWORD)@")
            assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL")  # $(…) expands


def test_webhook_may_only_create_jobs_and_a_policy_narrows_which(rendered) -> None:
    objs = rendered["base"]
    rules = find(objs, "Role", "slicewise-retrain-launcher")["rules"]
    assert {(tuple(r["resources"]), tuple(r["verbs"])) for r in rules} == {
        (("cronjobs",), ("get",)),
        (("jobs",), ("create", "get")),  # get: the launcher waits for the Job it created
    }
    policy = find(objs, "ValidatingAdmissionPolicy", "slicewise-webhook-retrain-jobs-only")
    assert "slicewise-webhook" in policy["spec"]["matchConditions"][0]["expression"]
    text = " ".join(v["expression"] for v in policy["spec"]["validations"])
    assert "slicewise-retrain" in text and "automountServiceAccountToken" in text
    binding = find(objs, "ValidatingAdmissionPolicyBinding", "slicewise-webhook-retrain-jobs-only")
    assert binding["spec"]["validationActions"] == ["Deny"]
    # the retrain Job template passes the policy's checks
    job = find(objs, "CronJob", "slicewise-retrain")["spec"]["jobTemplate"]["spec"]["template"]
    assert [c["name"] for c in job["spec"]["containers"]] == ["retrain"]
    assert job["spec"]["containers"][0]["args"][0] == "retrain"
    assert job["spec"]["automountServiceAccountToken"] is False
    assert {
        v["persistentVolumeClaim"]["claimName"]
        for v in job["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    } == {"slicewise-models"}


def test_egress_is_denied_except_dns_redis_and_the_api_server(rendered) -> None:
    objs = rendered["base"]
    deny = find(objs, "NetworkPolicy", "default-deny-egress")["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Egress"] and "egress" not in deny
    dns = find(objs, "NetworkPolicy", "slicewise-dns-egress")["spec"]["egress"][0]["ports"]
    assert {p["port"] for p in dns} == {53}
    to_redis = find(objs, "NetworkPolicy", "slicewise-redis-egress")["spec"]
    clients = set(to_redis["podSelector"]["matchExpressions"][0]["values"])
    assert clients == {"slicewise", "slicewise-monitor", "slicewise-webhook", "slicewise-retrain"}
    assert to_redis["egress"][0]["ports"] == [{"port": 6379, "protocol": "TCP"}]
    api = find(objs, "NetworkPolicy", "slicewise-webhook-apiserver-egress")["spec"]
    assert api["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "slicewise-webhook"}
    # only the API server's address (from cluster.yaml), only its ports
    cluster = yaml.safe_load((ROOT / "k8s" / "base" / "cluster.yaml").read_text())
    assert api["egress"] == [
        {
            "to": [{"ipBlock": {"cidr": cluster["data"]["apiserver-cidr"]}}],
            "ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}],
        }
    ]
    assert ipaddress.ip_network(cluster["data"]["apiserver-cidr"]).prefixlen >= 24
    assert not any(o["metadata"]["name"] == "slicewise-cluster" for o in objs)  # local-config


@pytest.mark.parametrize("target", OVERLAYS)
def test_no_pod_can_reach_anything_but_dns_redis_and_only_the_webhook_the_api(
    rendered, target
) -> None:
    """Every egress rule of every policy goes to kube-dns, the Redis pods, or (webhook only)
    the API server's ipBlock: nothing open to 0.0.0.0/0, nothing for the service."""
    cidr = yaml.safe_load((ROOT / "k8s" / "base" / "cluster.yaml").read_text())["data"][
        "apiserver-cidr"
    ]
    dns = {"podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
    redis_pods = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "slicewise-redis"}}}
    for pol in (o for o in rendered[target] if o["kind"] == "NetworkPolicy"):
        for rule in pol["spec"].get("egress", []):
            for peer in rule["to"]:
                if "ipBlock" in peer:
                    assert peer == {"ipBlock": {"cidr": cidr}}, pol["metadata"]["name"]
                    assert pol["spec"]["podSelector"]["matchLabels"] == {
                        "app.kubernetes.io/name": "slicewise-webhook"
                    }
                elif "namespaceSelector" in peer:
                    assert peer["podSelector"] == dns["podSelector"], pol["metadata"]["name"]
                    assert {p["port"] for p in rule["ports"]} == {53}
                else:
                    assert peer == redis_pods, pol["metadata"]["name"]
                    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
