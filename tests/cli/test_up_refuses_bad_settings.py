"""`nemo up` refuses a bad setting in one line, before it starts anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_nemo_up_names_an_out_of_bounds_token_ttl_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "NEMO_TOKEN_TTL": "10", "NEMO_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    nemo = Path(sys.executable).parent / "nemo"
    done = subprocess.run([nemo, "up"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["error: NEMO_TOKEN_TTL: Input should be greater than or equal to 60"]
    assert not (tmp_path / "nemo.db").exists()  # refused before anything started
