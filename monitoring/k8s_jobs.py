"""Retrain Jobs on Kubernetes: what `kubectl create job --from=cronjob/slicewise-retrain` does,
through the API with the pod's service-account token (plain HTTPS, no client library).

The suspended CronJob `slicewise-retrain` (k8s/base/retrain.yaml) is the Job template: image,
resources, GPU, volumes live there, not here. The webhook's Role allows exactly what this
module does: `get` that one CronJob, `create` Jobs and `get` them (to wait for the one it
created, so retrains run one at a time).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx

from slicewise.core.errors import SlicewiseError

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
CRONJOB = "slicewise-retrain"


class KubernetesJobError(SlicewiseError, RuntimeError):
    """Not in a cluster, or the API refused or failed the retrain Job."""


def job_from_cronjob(cronjob: dict[str, Any], job: dict[str, Any], name: str) -> dict[str, Any]:
    """The Job to create for queue entry `job` from the CronJob's template.

    Like `kubectl create job --from=cronjob/…`: the template's spec, the CronJob as owner, the
    `cronjob.kubernetes.io/instantiate: manual` annotation; plus `--reason <job JSON>` appended
    to the first container's args, so the run report says which alert started it.
    """
    template = copy.deepcopy(cronjob["spec"]["jobTemplate"])
    spec = template["spec"]
    container = spec["template"]["spec"]["containers"][0]
    container["args"] = [*container.get("args", []), "--reason", json.dumps(job)]
    meta = cronjob["metadata"]
    t_meta = template.get("metadata", {})
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {**t_meta.get("labels", {}), "app.kubernetes.io/name": meta["name"]},
        "annotations": {
            **t_meta.get("annotations", {}),
            "cronjob.kubernetes.io/instantiate": "manual",
            "slicewise.io/alerts": ",".join(job.get("alerts", [])),
            "slicewise.io/slices": ",".join(job.get("slices", [])),
        },
    }
    if meta.get("namespace"):
        metadata["namespace"] = meta["namespace"]
    if meta.get("uid"):  # deleting the CronJob deletes its Jobs, as with kubectl
        metadata["ownerReferences"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
            }
        ]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


def job_name(job: dict[str, Any]) -> str:
    """`slicewise-retrain-<time>-<hash of the group key>`: unique per alert group and time."""
    digest = hashlib.sha256(str(job.get("group_key", "")).encode()).hexdigest()[:6]
    return f"{CRONJOB}-{int(job.get('received_at', time.time()))}-{digest}"


class KubernetesJobLauncher:
    """Create a retrain Job from the CronJob template and wait until it finishes.

    Used as the webhook worker's launcher (`slicewise webhook --run-retrains --launcher
    kubernetes`). `transport` lets tests answer for the API server.
    """

    def __init__(
        self,
        api_url: str,
        token: str,
        namespace: str,
        verify: str | bool = True,
        transport: httpx.BaseTransport | None = None,
        poll_seconds: float = 10.0,
    ) -> None:
        self.namespace = namespace
        self.poll_seconds = poll_seconds
        self.http = httpx.Client(
            base_url=api_url,
            headers={"Authorization": f"Bearer {token}"},
            verify=verify,
            transport=transport,
            timeout=30,
        )

    @classmethod
    def in_cluster(cls) -> KubernetesJobLauncher:
        """From the pod's service account (token, CA, namespace) and the API server's env vars.

        Raises:
            KubernetesJobError: not running in a pod with a service-account token.
        """
        host, port = (
            os.environ.get("KUBERNETES_SERVICE_HOST"),
            os.environ.get("KUBERNETES_SERVICE_PORT", "443"),
        )
        token = SERVICE_ACCOUNT / "token"
        if not host or not token.is_file():
            raise KubernetesJobError(
                "--launcher kubernetes needs to run in a pod with a service-account token "
                f"(KUBERNETES_SERVICE_HOST set, {token} present); use --launcher local elsewhere"
            )
        return cls(
            f"https://{host}:{port}",
            token.read_text().strip(),
            (SERVICE_ACCOUNT / "namespace").read_text().strip(),
            verify=str(SERVICE_ACCOUNT / "ca.crt"),
        )

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        url = f"/apis/batch/v1/namespaces/{self.namespace}/{path}"
        r = self.http.request(method, url, **kw)
        if r.status_code >= 400:
            raise KubernetesJobError(f"{method} {url}: HTTP {r.status_code}: {r.text[:300]}")
        return r.json()

    def create(self, job: dict[str, Any]) -> dict[str, Any]:
        """Create the Job for queue entry `job`; returns the Job object sent."""
        cronjob = self._call("GET", f"cronjobs/{CRONJOB}")
        body = job_from_cronjob(cronjob, job, job_name(job))
        self._call("POST", "jobs", json=body)
        return body

    def wait(self, name: str, timeout: float) -> str:
        """Poll the Job until it succeeded or failed; returns how it ended.

        Raises:
            KubernetesJobError: still running after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self._call("GET", f"jobs/{name}").get("status", {})
            if status.get("succeeded"):
                return f"Job {name} succeeded"
            failed = [
                c for c in status.get("conditions", []) if c["type"] == "Failed" and c["status"]
            ]
            if failed or status.get("failed"):
                why = failed[0].get("message", "") if failed else ""
                return f"Job {name} failed {why}".strip()
            time.sleep(self.poll_seconds)
        raise KubernetesJobError(f"Job {name} still running after {timeout:.0f}s")

    def __call__(self, job: dict[str, Any]) -> str:
        """Run one retrain as a Job, to its end (the worker's `Launcher`)."""
        body = self.create(job)
        deadline = body["spec"].get("activeDeadlineSeconds", 3 * 3600)
        return self.wait(body["metadata"]["name"], timeout=deadline + 600)
