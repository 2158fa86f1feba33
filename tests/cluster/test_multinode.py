"""A 3-node Ray cluster on this machine: placement, the same model, a node killed mid-fit.

The cluster (``ray.cluster_utils.Cluster``: a head without CPUs + 2 worker nodes
of 1 CPU each) runs in a
child process (:mod:`multinode_run`), because this pytest process may already be connected to
the session's single-node Ray (``ray_cluster`` fixture) and a process joins one cluster only.
It is slow (about 1.5 minutes on 2 shared cores: three raylets, object stores and workers), so
everything is checked on ONE run of the child.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cluster_helpers import write_csv

from shardlearn.data import ingest

pytest.importorskip("ray.cluster_utils")

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("multinode")
    ingest(write_csv(root / "jobs.csv", n=400), "label", root / "ds", partitions=4, seed=0)
    out = root / "out.json"
    paths = [str(HERE), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, paths)))
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "multinode_run.py"), str(root / "ds"), str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        log, _ = proc.communicate(timeout=800)
    except subprocess.TimeoutExpired:
        proc.terminate()  # its SIGTERM handler shuts the Ray cluster down
        log, _ = proc.communicate(timeout=60)
        pytest.fail(f"the 3-node run timed out:\n{log[-3000:]}")
    assert proc.returncode == 0, log[-3000:]
    return json.loads(out.read_text())


def test_three_nodes_joined(run):
    assert run["alive_nodes"] == 3
    assert len(set(run["nodes"].values())) == 3


def test_each_shard_is_read_on_the_node_of_the_worker_that_owns_it(run):
    actor_nodes = run["actor_nodes"]
    assert len(set(actor_nodes)) == 2  # one CPU per node, held by each actor: two nodes
    assert set(actor_nodes) == {run["nodes"]["node_a"], run["nodes"]["node_b"]}
    owner = {path: rank for rank, paths in enumerate(run["assigned"]) for path in paths}
    assert sorted(owner) == sorted(r["path"] for r in run["reads"])
    for read in run["reads"]:
        assert read["rank"] == owner[read["path"]]
        assert read["node"] == actor_nodes[read["rank"]]


def test_three_node_cluster_fits_the_same_model_as_the_local_engine(run):
    np.testing.assert_allclose(run["ray_coef"], run["local_coef"], rtol=0, atol=1e-6)


def test_a_node_killed_mid_fit_gives_the_same_model(run):
    assert run["killed"]["done"] and not run["killed"]["head"]
    assert run["alive_after"] == 2  # the node really is gone
    np.testing.assert_allclose(run["killed_coef"], run["local_coef"], rtol=0, atol=1e-6)
