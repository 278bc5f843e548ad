"""Registration of artifact bundles in the BentoML model store (docs/design.md §5).

The bundle directory's files are copied into a store model named `slicewise-classifier`
whose version is the bundle's version; the evaluation summary goes into its metadata.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from slicewise.core import contracts as c

log = logging.getLogger(__name__)


def register_bundle(bundle: c.Bundle) -> str:
    """Copy `bundle` into the BentoML model store; return the tag `slicewise-classifier:<version>`.

    Re-exporting a checkpoint gives the same version: its earlier registration is replaced.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    m = bundle.manifest
    summary = {k: v for k, v in m.evaluation.items() if isinstance(v, int | float | str | bool)}
    metadata = {
        "labels": m.labels,
        "slices": m.slice_names,
        "monitored": m.monitored_slices,
        "model_kind": m.model_kind,
        "dataset_fingerprint": m.dataset_fingerprint,
        **summary,
    }
    tag = f"{c.MODEL_NAME}:{m.version}"
    try:
        bentoml.models.get(tag)
    except NotFound:
        pass
    else:
        log.info("replacing %s in the BentoML model store with the new export", tag)
        bentoml.models.delete(tag)
    with bentoml.models.create(
        tag, labels={"project": str(m.training.get("project", ""))}, metadata=metadata
    ) as model:
        for item in Path(bundle.path).iterdir():
            dst = Path(model.path) / item.name
            if item.is_dir():
                shutil.copytree(item, dst)
            else:
                shutil.copy2(item, dst)
    return tag
