"""A carbon intensity source must be a regular file: the collector reads it on the control plane's event loop."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from nemo_kernel.domain import ClusterSpec
from nemo_kernel.metrics.carbon import CarbonIntensity


def test_a_fifo_under_an_allowed_root_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "grid.csv"
    os.mkfifo(fifo)
    spec = ClusterSpec.model_validate(
        {
            "name": "edge-a",
            "tier": "edge",
            "region": "eu-south",
            "country": "ES",
            "nodes": [{"name": "n1", "cpu": 1, "memory_mib": 512}],
            "carbon_intensity": 123.0,
            "carbon_intensity_source": {"csv": str(fifo)},
        }
    )
    answers: list[float] = []
    reader = threading.Thread(target=lambda: answers.append(CarbonIntensity([tmp_path]).at(spec, time.time())))
    reader.start()
    reader.join(10)
    if reader.is_alive():  # opened the FIFO and waits for a writer for ever: release it so the run goes on
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join()
        pytest.fail("reading a FIFO as the carbon source blocked the collector")
    assert answers == [123.0]  # refused: the cluster's constant
