"""What `nemo up` tells a new user to type next works as typed, venv activated or not: with a real `nemo up`."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.stack import ROOT, running_stack

pytestmark = pytest.mark.e2e  # starts `nemo up`: run first (tests/conftest.py)


def test_the_next_steps_nemo_up_prints_run_without_an_activated_venv(tmp_path: Path) -> None:
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({"clusters": []}))
    # The README's first step, `.venv/bin/nemo up`, leaves `nemo` off PATH: the venv is not activated.
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "nemo").exists())
    with running_stack(tmp_path / "data", {"NEMO_CLUSTERS_FILE": str(clusters), "PATH": path}) as stack:
        log = (tmp_path / "data-nemo-up.log").read_text()
        hint = re.search(r"^Next: (.+?);", log, re.MULTILINE)
        assert hint is not None, log

        done = subprocess.run(
            [*hint[1].split(), "-o", "json"], env=stack.env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )

    assert done.returncode == 0, f"{hint[1]!r}: {done.stderr}"
    assert yaml.safe_load(done.stdout) == []
