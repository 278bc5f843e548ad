"""Retrain Jobs from the CronJob template through the Kubernetes API.

No cluster is available here: the API server is played by an `httpx.MockTransport` that answers
with the CronJob from k8s/base/retrain.yaml and records every request. The test checks the Job
object (schema-validated against Kubernetes 1.30), the requests, and that the webhook's Role in
k8s/base/webhook.yaml allows exactly those requests.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import kubernetes_validate
import pytest
import yaml

from monitoring.k8s_jobs import KubernetesJobError, KubernetesJobLauncher, job_from_cronjob

K8S = Path(__file__).resolve().parents[2] / "k8s" / "base"
JOB = {
    "group_key": '{}:{alertname="SliceDriftDetected", slice="negation"}',
    "received_at": 1764600000.5,
    "alerts": ["SliceDriftDetected"],
    "slices": ["negation"],
}


def manifest(name: str, kind: str) -> dict:
    docs = yaml.safe_load_all((K8S / name).read_text())
    return next(d for d in docs if d and d["kind"] == kind)


@pytest.fixture
def cronjob() -> dict:
    cj = manifest("retrain.yaml", "CronJob")
    cj["metadata"] |= {"namespace": "slicewise", "uid": "0d1c-cronjob-uid"}
    return cj


class FakeApiServer:
    """Answers the three calls the launcher makes; the Job succeeds on the second look."""

    def __init__(self, cronjob: dict) -> None:
        self.cronjob, self.requests, self.created, self.looks = cronjob, [], None, 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        assert request.headers["authorization"] == "Bearer sa-token"
        base = "/apis/batch/v1/namespaces/slicewise"
        if request.method == "GET" and request.url.path == f"{base}/cronjobs/slicewise-retrain":
            return httpx.Response(200, json=self.cronjob)
        if request.method == "POST" and request.url.path == f"{base}/jobs":
            self.created = json.loads(request.content)
            return httpx.Response(201, json=self.created)
        if (
            request.method == "GET"
            and self.created
            and request.url.path.endswith(self.created["metadata"]["name"])
        ):
            self.looks += 1
            return httpx.Response(200, json={"status": {"succeeded": 1} if self.looks > 1 else {}})
        return httpx.Response(403, json={"message": "forbidden"})


def test_job_is_the_cronjob_template_with_the_alert_as_reason(cronjob) -> None:
    job = job_from_cronjob(cronjob, JOB, "slicewise-retrain-1764600000-abc123")
    kubernetes_validate.validate(job, "1.30", strict=True)
    assert job["spec"] == {
        **cronjob["spec"]["jobTemplate"]["spec"],
        "template": job["spec"]["template"],
    }
    ctr = job["spec"]["template"]["spec"]["containers"][0]
    template_ctr = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert ctr["args"][:-2] == template_ctr["args"] and ctr["args"][-2] == "--reason"
    assert json.loads(ctr["args"][-1]) == JOB
    assert ctr["resources"] == template_ctr["resources"] and ctr["image"] == template_ctr["image"]
    meta = job["metadata"]
    assert meta["namespace"] == "slicewise"
    assert meta["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert meta["annotations"]["slicewise.io/slices"] == "negation"
    assert meta["ownerReferences"][0] == {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "name": "slicewise-retrain",
        "uid": "0d1c-cronjob-uid",
        "controller": True,
    }
    # the template itself is untouched (a second alert gets a clean copy)
    assert "--reason" not in template_ctr["args"]


def test_launcher_creates_the_job_and_waits_for_it(cronjob) -> None:
    api = FakeApiServer(cronjob)
    launcher = KubernetesJobLauncher(
        "https://k8s.test",
        "sa-token",
        "slicewise",
        transport=httpx.MockTransport(api),
        poll_seconds=0,
    )
    ended = launcher(JOB)
    name = api.created["metadata"]["name"]
    assert name.startswith("slicewise-retrain-1764600000-") and len(name) <= 63
    assert ended == f"Job {name} succeeded"
    base = "/apis/batch/v1/namespaces/slicewise"
    assert api.requests == [
        ("GET", f"{base}/cronjobs/slicewise-retrain"),
        ("POST", f"{base}/jobs"),
        ("GET", f"{base}/jobs/{name}"),
        ("GET", f"{base}/jobs/{name}"),
    ]


def test_role_allows_exactly_what_the_launcher_does() -> None:
    role = manifest("webhook.yaml", "Role")
    allowed = {
        (res, verb, tuple(rule.get("resourceNames", [])))
        for rule in role["rules"]
        for res in rule["resources"]
        for verb in rule["verbs"]
    }
    assert allowed == {
        ("cronjobs", "get", ("slicewise-retrain",)),
        ("jobs", "create", ()),
        ("jobs", "get", ()),
    }
    deployment = manifest("webhook.yaml", "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-3:] == ["--run-retrains", "--launcher", "kubernetes"]


def test_api_refusal_is_an_error_naming_the_request(cronjob) -> None:
    launcher = KubernetesJobLauncher(
        "https://k8s.test",
        "sa-token",
        "other-namespace",
        transport=httpx.MockTransport(FakeApiServer(cronjob)),
    )
    with pytest.raises(KubernetesJobError, match=r"GET .*other-namespace/cronjobs.*HTTP 403"):
        launcher(JOB)


def test_outside_a_cluster_the_launcher_says_so(monkeypatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubernetesJobError, match="--launcher local"):
        KubernetesJobLauncher.in_cluster()
