"""NEMO_WEIGHTS: the weights of the placement criteria as one JSON mapping, checked at startup; the variables it
replaces (NEMO_WEIGHT_COST, NEMO_WEIGHT_CARBON, NEMO_WEIGHT_BALANCE) are still read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from nemo_kernel.config import Settings
from nemo_kernel.orchestrator.decision import DecisionEngine

DEFAULTS = {"latency": 1.0, "energy": 0.0}  # the default weights of the criteria these tests leave out


@pytest.fixture(autouse=True)
def _no_weights_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NEMO_WEIGHTS", "NEMO_WEIGHT_COST", "NEMO_WEIGHT_CARBON", "NEMO_WEIGHT_BALANCE"):
        monkeypatch.delenv(name, raising=False)


def test_one_mapping_sets_the_weights_and_a_criterion_left_out_weighs_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEMO_WEIGHTS", '{"cost": 2, "carbon": 0.5}')
    settings = Settings()
    assert settings.weights == {"cost": 2.0, "carbon": 0.5, "balance": 1.0, **DEFAULTS}
    assert DecisionEngine(settings.weights).weights == {"cost": 2.0, "carbon": 0.5, "balance": 1.0, **DEFAULTS}


def test_unset_weights_are_the_engines_defaults() -> None:
    settings = Settings()
    assert settings.weights is None
    assert DecisionEngine(settings.weights).weights == {"cost": 1.0, "carbon": 1.0, "balance": 1.0, **DEFAULTS}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"speed": 1}', "unknown criterion 'speed'; known: cost, carbon, balance, latency, energy"),
        ('{"cost": 1001}', "weight of cost must be a number from 0 to 1000, not 1001"),
        ('{"cost": -1}', "weight of cost must be a number from 0 to 1000, not -1"),
        ('{"cost": true}', "weight of cost must be a number from 0 to 1000, not True"),
        ('{"cost": "2"}', "weight of cost must be a number from 0 to 1000, not '2'"),
        ('{"cost": NaN}', "cost: must be a finite number"),
        ('{"cost": 1, "cost": 2}', "duplicate key 'cost'"),
        ("cost=1", "not valid JSON"),
        ("[1, 2]", "must be a JSON mapping of criterion to weight"),
        ('{"cost": 0, "carbon": 0, "balance": 0, "latency": 0}', "at least one weight must be above 0"),
    ],
)
def test_bad_weights_are_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch, value: str, message: str) -> None:
    monkeypatch.setenv("NEMO_WEIGHTS", value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    (error,) = caught.value.errors()
    assert error["loc"] == ("weights",)
    assert message in error["msg"]


def test_the_old_variables_are_still_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEMO_WEIGHT_COST", "2")
    monkeypatch.setenv("NEMO_WEIGHT_BALANCE", "0")
    assert Settings().weights == {"cost": 2.0, "carbon": 1.0, "balance": 0.0, **DEFAULTS}


def test_old_variables_and_the_mapping_combine_but_may_not_disagree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEMO_WEIGHTS", '{"cost": 3, "carbon": 0}')
    monkeypatch.setenv("NEMO_WEIGHT_BALANCE", "0.5")
    monkeypatch.setenv("NEMO_WEIGHT_COST", "3")  # the same weight twice is no conflict
    assert Settings().weights == {"cost": 3.0, "carbon": 0.0, "balance": 0.5, **DEFAULTS}

    # Neither silently wins: an operator who set both would not know which one placement follows.
    monkeypatch.setenv("NEMO_WEIGHT_COST", "2")
    with pytest.raises(ValidationError, match="cost is 3 in NEMO_WEIGHTS but 2 in NEMO_WEIGHT_COST; set it once"):
        Settings()


@pytest.mark.parametrize("value", ["-1", "1001", "inf", "nan", "heavy"])
def test_an_old_variable_out_of_range_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("NEMO_WEIGHT_CARBON", value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert [e["loc"] for e in caught.value.errors()] == [("weight_carbon",)]


def test_nemo_up_names_bad_weights_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "NEMO_WEIGHTS": '{"speed": 1}', "NEMO_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    nemo = Path(sys.executable).parent / "nemo"
    done = subprocess.run([nemo, "up"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert (
        "NEMO_WEIGHTS: Value error, unknown criterion 'speed'; known: cost, carbon, balance, latency, energy"
        in done.stderr
    )
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "nemo.db").exists()  # refused before anything started
