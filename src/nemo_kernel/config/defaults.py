"""The three local clusters ``nemo up`` creates out of the box, and loading a clusters file."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml


def default_clusters_yaml() -> str:
    """The embedded clusters file: a cloud cluster, an edge cluster and an IoT gateway."""
    return resources.files("nemo_kernel.config").joinpath("default_clusters.yaml").read_text()


def load_clusters_file(path: Path | None) -> list[dict[str, Any]]:
    """Cluster specs (unvalidated dicts) from ``path``, or the embedded defaults when ``path`` is None."""
    text = path.read_text() if path is not None else default_clusters_yaml()
    data = yaml.safe_load(text) or {}
    clusters = data.get("clusters", []) if isinstance(data, dict) else data
    if not isinstance(clusters, list):
        raise ValueError(f"{path}: expected a list of clusters under 'clusters'")
    return clusters
