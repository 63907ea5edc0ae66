"""The Ray executor on a real 2-node local cluster (loopback only) gives the local executor's results."""

from __future__ import annotations

import os

import pytest
from helpers import deterministic_metrics, tiny_suite

from experiments.execute import RunOptions
from experiments.grid import GridOptions, GridRunner
from experiments.suite import load_suite

pytestmark = [pytest.mark.ray, pytest.mark.slow]
assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0", "conftest.py sets Ray's loopback switch"
ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False}
    )
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    ray.init(address=cluster.address)
    addresses = {node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]}
    if addresses != {"127.0.0.1"} or len(ray.nodes()) != 2:
        ray.shutdown()
        cluster.shutdown()
        pytest.skip(f"Ray nodes did not stay on loopback: {addresses}")
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _metrics(summary: dict) -> dict:
    return {row["seed"]: deterministic_metrics(row["run_dir"]) for row in summary["runs_detail"]}


def test_ray_cluster_grid_matches_inline_results(cluster, tmp_path):
    (tmp_path / "tiny.toml").write_text(tiny_suite(seeds="[1, 2]", steps=2048))
    suite = load_suite(str(tmp_path / "tiny.toml"))
    results = {}
    for executor in ("ray", "inline"):
        options = RunOptions(runs_dir=tmp_path / executor, progress=False)
        grid = GridOptions(executor=executor, retries=1, progress_interval_s=5)
        summary = GridRunner(suite.name, list(suite.specs), options, grid).run()
        assert summary["counts"] == {"done": 2}, summary
        results[executor] = _metrics(summary)
    assert results["ray"] == results["inline"]
    assert len(results["ray"][1]) > 5
