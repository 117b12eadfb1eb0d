"""Power models, energy shares and carbon intensity series: the arithmetic users' energy and CO2 figures rest on."""

from __future__ import annotations

from pathlib import Path

import pytest

from nemo_kernel.domain import PowerModel
from nemo_kernel.metrics.carbon import CarbonSourceRefused, allowed, parse_csv
from nemo_kernel.metrics.energy import grams_co2, joules_between, power_at, replica_share

LINEAR = PowerModel(idle_watts=50, max_watts=250)
TABLE = PowerModel.model_validate(
    {
        "table": [
            {"utilisation": 0.0, "watts": 60},
            {"utilisation": 0.5, "watts": 160},
            {"utilisation": 1.0, "watts": 200},
        ]
    }
)


@pytest.mark.parametrize(("u", "watts"), [(0, 50), (0.25, 100), (1, 250), (-1, 50), (7, 250), (float("nan"), 50)])
def test_linear_power_is_clamped_to_the_model(u: float, watts: float) -> None:
    assert power_at(LINEAR, u) == pytest.approx(watts)


@pytest.mark.parametrize(("u", "watts"), [(0, 60), (0.25, 110), (0.5, 160), (0.75, 180), (1, 200)])
def test_a_table_is_interpolated_and_wins_over_idle_and_max(u: float, watts: float) -> None:
    assert power_at(TABLE, u) == pytest.approx(watts)


def test_a_table_flat_beyond_its_first_and_last_points() -> None:
    narrow = PowerModel.model_validate(
        {"table": [{"utilisation": 0.2, "watts": 70}, {"utilisation": 0.8, "watts": 130}]}
    )
    assert power_at(narrow, 0.0) == 70 and power_at(narrow, 1.0) == 130


def test_energy_between_readings_and_shares_that_add_up() -> None:
    # one of two cores busy for 10 s: half the dynamic range above idle, for 10 s
    assert joules_between(LINEAR, cpu_seconds=10, seconds=10, cores=2) == pytest.approx(1500)
    assert joules_between(LINEAR, cpu_seconds=10, seconds=0, cores=2) == 0
    shares = [replica_share(1500, cpu, 10, 2) for cpu in (7.5, 2.5)]
    assert shares == pytest.approx([1125, 375]) and sum(shares) == pytest.approx(1500)
    # nothing used CPU: idle draw split evenly
    assert [replica_share(500, 0, 0, 4)] * 4 == [125] * 4
    assert grams_co2(3_600_000, 300) == pytest.approx(300)


def test_a_carbon_csv_reads_iso_and_unix_times_in_any_order() -> None:
    series = parse_csv("timestamp,grams_per_kwh\n2026-01-01T01:00:00+00:00,200\n1767225600,100\n\n")
    assert series.at(1767225599) is None
    assert series.at(1767225600) == 100
    assert series.at(1767229199) == 100
    assert series.at(1767229200) == 200


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "no readings"),
        ("1,2,3\n", "row 1"),
        ("t,g\n1,100\nt,g\n", "row 3"),  # a header only on the first row
        ("1,100\n2,abc\n", "row 2"),
        ("1,100\n2,-5\n", "row 2"),
        ("1,100\n2,1e9\n", "row 2"),
        ("1,100\n2,nan\n", "row 2"),
        ("1,100\n2026-01-01T00:00:00,5\n", "UTC offset"),
    ],
)
def test_a_bad_carbon_csv_is_refused_naming_the_row(text: str, reason: str) -> None:
    with pytest.raises(CarbonSourceRefused, match=reason):
        parse_csv(text)


def test_carbon_files_only_under_allowed_roots(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "grid.csv").write_text("1,100\n")
    assert allowed(str(root / "grid.csv"), [root]) == (root / "grid.csv").resolve()
    for path in ("/etc/passwd", str(root / ".." / "x.csv")):
        with pytest.raises(CarbonSourceRefused, match="NEMO_CARBON_DATA_ROOTS"):
            allowed(path, [root])
    with pytest.raises(CarbonSourceRefused, match="is empty"):
        allowed(str(root / "grid.csv"), [])
