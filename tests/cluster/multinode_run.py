"""Run by test_multinode.py in its own process: a 3-node Ray cluster on this machine.

``ray.cluster_utils.Cluster`` starts a head and two worker nodes, each with its own raylet
and object store and one custom resource (``node_head``, ``node_a``, ``node_b``). The worker
nodes have one CPU each; the head has none (like a KubeRay head with ``num-cpus: 0``), so
workers run on the two worker nodes only and killing one never kills the driver's node.
It runs in a subprocess because the test session may already hold a single-node Ray (the
``ray_cluster`` fixture) and one process can join one Ray cluster only.

Usage: ``python multinode_run.py DATASET_DIR OUT_JSON``. Writes what it observed as JSON; the
test makes the assertions. The cluster is always shut down (every raylet killed) on exit.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import warnings

import numpy as np

# Ray marks a removed node dead only after its health check times out.
NODE_DEATH_TIMEOUT = 120


def _alive_once_settled(expected: int) -> int:
    """Alive nodes, once Ray's view has caught up with a removal (or the timeout passed)."""
    import ray

    deadline = time.monotonic() + NODE_DEATH_TIMEOUT
    while True:
        alive = len([n for n in ray.nodes() if n["Alive"]])
        if alive <= expected or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


def node_of(state) -> str:
    """On a worker: the Ray node it runs on."""
    import ray

    return ray.get_runtime_context().get_node_id()


def _start_cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "resources": {"node_head": 1}, "include_dashboard": False},
    )
    nodes = {"node_head": cluster.head_node}
    for name in ("node_a", "node_b"):
        nodes[name] = cluster.add_node(num_cpus=1, resources={name: 1})
    cluster.wait_for_nodes()
    return cluster, nodes


def _placement(eng, dataset) -> dict:
    from cluster_helpers import read_own_shards

    from shardlearn.engine import Resources

    # Each actor holds the one CPU of its node, so the two actors are on two different nodes.
    with eng.workers(2, resources=Resources(cpus=1)) as group:
        group.assign(dataset.shards("train"))
        nodes = group.run(node_of)
        reads = [r for worker in group.run(read_own_shards) for r in worker]
        assigned = [[s.path for s in part] for part in group.shards]
    return {"actor_nodes": nodes, "reads": reads, "assigned": assigned}


def _fit(eng, dataset, kill=None):
    from shardlearn.models import LogisticRegression, Pipeline
    from shardlearn.preprocess import Preprocessor

    model = Pipeline(Preprocessor.auto(dataset.schema), LogisticRegression(tol=1e-10, max_iter=500))
    callback = None
    if kill is not None:

        def callback(info):
            if info.iteration == 3 and not kill["done"]:
                kill["done"] = True
                group = eng._groups[-1]  # the fit's group: kill the node of worker 1, for real
                victim = group.run(node_of)[1]
                node = next(n for n in kill["nodes"].values() if n.node_id == victim)
                kill["cluster"].remove_node(node, allow_graceful=False)
                kill["victim"] = victim
                kill["head"] = victim == kill["nodes"]["node_head"].node_id

    model.fit(dataset, engine=eng, callback=callback)
    return model


def main(dataset_dir: str, out_path: str) -> None:
    import ray

    from shardlearn.data import Dataset
    from shardlearn.engine import engine

    dataset = Dataset.open(dataset_dir)
    result: dict = {}
    with engine("local", workers=2) as eng:
        result["local_coef"] = _fit(eng, dataset).estimator.coef_.tolist()
    cluster, nodes = _start_cluster()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        result["nodes"] = {name: node.node_id for name, node in nodes.items()}
        result["alive_nodes"] = len([n for n in ray.nodes() if n["Alive"]])
        with engine("ray", workers=2) as eng:
            result.update(_placement(eng, dataset))
            result["ray_coef"] = _fit(eng, dataset).estimator.coef_.tolist()
            kill = {"cluster": cluster, "nodes": nodes, "done": False}
            model = _fit(eng, dataset, kill=kill)
            result["killed_coef"] = model.estimator.coef_.tolist()
            result["killed"] = {k: kill.get(k) for k in ("done", "victim", "head")}
            result["alive_after"] = _alive_once_settled(result["alive_nodes"] - 1)
    finally:
        ray.shutdown()
        cluster.shutdown()
    with open(out_path, "w") as stream:
        json.dump(result, stream, default=lambda v: np.asarray(v).tolist())


def _terminate(signum, frame):
    raise SystemExit(f"terminated by signal {signum}")  # runs the finally: cluster.shutdown()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    main(sys.argv[1], sys.argv[2])
