"""``nemo cluster generate``: a seeded, bounded fleet of sim clusters that the control plane reads as it is."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from nemo_kernel.clusters.fleet import GRIDS, MAX_CLUSTERS, generate_fleet
from nemo_kernel.config import load_clusters_file
from nemo_kernel.domain import ClusterSpec, DriverKind, TeeType, Tier

NEMO = Path(sys.executable).parent / "nemo"


def _nemo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([NEMO, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_same_seed_gives_the_same_fleet_and_another_seed_another() -> None:
    first = [c.model_dump() for c in generate_fleet(40, 3, seed=1)]
    assert first == [c.model_dump() for c in generate_fleet(40, 3, seed=1)]
    assert first != [c.model_dump() for c in generate_fleet(40, 3, seed=2)]


def test_the_fleet_is_spread_like_a_continuum() -> None:
    fleet = generate_fleet(400, 3, seed=5)
    assert len({c.name for c in fleet}) == 400
    assert all(c.driver is DriverKind.SIM and c.sim is not None and len(c.nodes) == 3 for c in fleet)
    tiers = Counter(c.tier for c in fleet)
    assert tiers[Tier.IOT] > tiers[Tier.EDGE] > tiers[Tier.CLOUD] > 0  # few clouds, many IoT gateways
    nodes = [n for c in fleet for n in c.nodes]
    assert {n.architecture for n in nodes} == {"amd64", "arm64"}
    assert {TeeType.TDX, TeeType.SEV_SNP} <= {n.tee for n in nodes}
    assert all("runc" in n.runtimes for n in nodes) and any("runh" in n.runtimes for n in nodes)
    assert len({c.country for c in fleet}) >= 15 and len({c.region for c in fleet}) >= 8
    # a cluster's carbon intensity is its grid's, give or take 10 %: Sweden's stays far below Poland's
    grid = {g.country: g.carbon_intensity for g in GRIDS if g.country != "US"}
    for c in fleet:
        if c.country in grid:
            assert 0.9 * grid[c.country] <= c.carbon_intensity <= 1.1 * grid[c.country]
    # the power models fit the nodes: an IoT board draws watts, a cloud server hundreds
    cloud = [n.power.max_watts for c in fleet if c.tier is Tier.CLOUD for n in c.nodes]
    iot = [n.power.max_watts for c in fleet if c.tier is Tier.IOT for n in c.nodes]
    assert max(iot) < min(cloud)
    cheapest_cloud = min(c.prices.cpu_hour_eur for c in fleet if c.tier is Tier.CLOUD)
    assert min(c.prices.cpu_hour_eur for c in fleet if c.tier is Tier.IOT) < cheapest_cloud


@pytest.mark.parametrize(
    ("count", "nodes", "named"),
    [(10**9, 10, "count"), (0, 10, "count"), (10, 0, "nodes"), (10, 10**9, "nodes"), (MAX_CLUSTERS, 5000, "count x")],
)
def test_sizes_are_bounded_before_anything_is_built(count: int, nodes: int, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        generate_fleet(count, nodes, seed=1)


def test_the_cli_writes_a_clusters_file_the_control_plane_reads(tmp_path: Path) -> None:
    out = tmp_path / "fleet.yaml"
    done = _nemo("cluster", "generate", "--count", "12", "--nodes", "2", "--seed", "9", "-o", str(out))
    assert done.returncode == 0, done.stderr
    specs = [ClusterSpec.model_validate(c) for c in load_clusters_file(out)]  # as NEMO_CLUSTERS_FILE is read
    assert [s.model_dump() for s in specs] == [c.model_dump() for c in generate_fleet(12, 2, seed=9)]
    again = _nemo("cluster", "generate", "--count", "12", "--nodes", "2", "--seed", "9")
    assert again.stdout == out.read_text()  # stdout by default, byte for byte the same


def test_the_cli_refuses_a_billion_clusters_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "fleet.yaml"
    done = _nemo("cluster", "generate", "--count", "1000000000", "-o", str(out))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["error: count must be between 1 and 10,000 clusters, not 1,000,000,000"]
    assert not out.exists()


def test_the_cli_refuses_a_negative_seed_naming_the_option(tmp_path: Path) -> None:
    # random.Random seeds with the absolute value: --seed -1 wrote the fleet of --seed 1
    out = tmp_path / "fleet.yaml"
    done = _nemo("cluster", "generate", "--count", "2", "--seed", "-1", "-o", str(out))
    assert done.returncode == 2 and "--seed" in done.stderr, done.stderr
    assert not out.exists()
