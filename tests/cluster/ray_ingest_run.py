"""Run by test_ray_ingest.py in its own process: ingest on a 3-node Ray cluster on this machine.

``ray.cluster_utils.Cluster`` starts a head and two worker nodes with one CPU each, so the
range tasks (one CPU each, SPREAD) run on all three. It runs in a subprocess for the reason
multinode_run.py gives: this pytest process may already hold the session's single-node Ray.

Usage: ``python ray_ingest_run.py SOURCE [SOURCE...] OUT_DIR``. Writes ``OUT_DIR/result.json``
with what it observed and the datasets ``OUT_DIR/ray3`` (3 parsers), ``OUT_DIR/ray2``
(2 parsers), ``OUT_DIR/killed`` (a range task's worker killed, retried) and tries
``OUT_DIR/failed`` (the same kill without retries); ingests given no engine inside
``with engine(ray)`` (``OUT_DIR/context``), with ``$SHARDLEARN_ENGINE=ray`` (``OUT_DIR/env``)
and given a local engine inside ``with engine(ray)`` (``OUT_DIR/explicit``); a pipeline's ingest
stage run on the ray engine (``OUT_DIR/pipeline``); five small files and a large one on Ray,
with the order its range tasks were submitted in, and on threads (``OUT_DIR/mixed-ray``,
``OUT_DIR/mixed-local``); with moto installed, the first source on
a moto S3 server read by the local engine (``OUT_DIR/s3-local``, one stream) and on Ray
(``OUT_DIR/s3-ray``, byte ranges read by the nodes). The test compares them with the local
engine. The cluster is always shut down on exit.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

RANGES = 16  # the first source is cut into about this many byte ranges
# Credentials of the moto S3 server; they and its AWS_ENDPOINT_URL are set before the cluster
# starts, so every node's workers inherit them (the way a cluster is configured).
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
KILLED_RANGE = 2  # the range whose first task is killed


def _marker(path: str) -> tuple[Path, Path]:
    """The marker a task creates once and the pipe it sends its pid through."""
    return Path(path + ".started"), Path(path + ".pid-pipe")


def parse_then_wait_once(byte_range, options, fast_types) -> Any:
    """In a Ray task: the first task of range :data:`KILLED_RANGE` sends its pid through a
    pipe and waits to be killed; every other task (and the retry) parses as usual."""
    from shardlearn.data import _ingest_ray

    marker, pipe = _marker(byte_range.path)
    if byte_range.index == KILLED_RANGE:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:  # the retry: parse
            pass
        else:
            with open(pipe, "w") as stream:  # blocks until the driver's killer reads it
                stream.write(str(os.getpid()))
            threading.Event().wait()  # until SIGKILL
    return _ingest_ray.parse_on_node(byte_range, options, fast_types)


def _kill_when_started(pipe: Path, killed: dict) -> threading.Thread:
    def run() -> None:
        with open(pipe) as stream:  # opens once the task opened its end
            pid = int(stream.read())
        os.kill(pid, signal.SIGKILL)
        killed["pid"] = pid

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _ingest(sources: list[str], out: Path, eng: Any, parsers: int | None = None) -> Any:
    from shardlearn.data import ingest

    return ingest(
        sources,
        "label",
        str(out),
        partitions=3,
        max_reject_rate=0.5,
        overwrite=True,
        progress=False,
        block_size=4096,
        parsers=parsers,
        engine=eng,
    )


def _killed_run(sources: list[str], out: Path, eng: Any) -> dict:
    """Ingest while the first task of one range is killed for real."""
    import ray_ingest_run

    from shardlearn.data import _ingest_ray

    marker, pipe = _marker(sources[0])
    marker.unlink(missing_ok=True)
    pipe.unlink(missing_ok=True)
    os.mkfifo(pipe)
    killed: dict = {}
    thread = _kill_when_started(pipe, killed)
    original = _ingest_ray.parse_on_node
    _ingest_ray.parse_on_node = ray_ingest_run.parse_then_wait_once
    result: dict = {}
    try:
        result["manifest"] = _ingest(sources, out, eng).manifest
    except Exception as error:  # the test asserts on it
        result["error"] = f"{type(error).__name__}: {error}"
    finally:
        _ingest_ray.parse_on_node = original
    thread.join(timeout=60)
    result["killed_pid"] = killed.get("pid")
    result["manifest_written"] = (out / "manifest.json").exists()
    return result


def _chosen_engines(sources: list[str], out: Path, eng: Any) -> dict:
    """Ingests given no engine: inside ``with engine(eng)``, with ``$SHARDLEARN_ENGINE=ray``
    (get_engine's shared engine on this cluster), and given a local engine inside the block."""
    from shardlearn.engine import ENGINE_ENV, create_engine, engine, get_engine

    result = {}
    with engine(eng):
        result["context"] = _ingest(sources, out / "context", None).manifest
        with create_engine("local", workers=2) as local:
            result["explicit"] = _ingest(sources, out / "explicit", local).manifest
    os.environ[ENGINE_ENV] = "ray"
    try:
        result["env"] = _ingest(sources, out / "env", None).manifest
        get_engine().close()  # the shared engine the variable made (not Ray itself)
    finally:
        del os.environ[ENGINE_ENV]
    return result


def _pipeline(sources: list[str], out: Path, eng: Any) -> dict:
    """A pipeline of one ingest stage (the options of :func:`_ingest`) run on ``eng``."""
    from shardlearn.data import Dataset
    from shardlearn.pipeline import parse_spec, run_pipeline

    stage = {"type": "ingest", "source": sources, "label": "label", "partitions": 3,
             "max_reject_rate": 0.5, "block_size": 4096, "out": str(out / "pipeline")}  # fmt: skip
    spec = parse_spec({"workdir": str(out / "pipeline-run"), "stages": {"data": stage}})
    result = run_pipeline(spec, engine=eng, progress=False)
    return Dataset.open(result.results["data"]["dataset"]).manifest


def _mixed(out: Path, eng: Any) -> dict:
    """Five small files, then a large one: on Ray (recording the order its range tasks are
    submitted in) and on threads."""
    from cluster_helpers import write_csv

    from shardlearn.data import _ingest_ray

    folder = out / "mixed-input"
    folder.mkdir()
    sizes = [40, 40, 40, 40, 40, 1000]
    paths = [str(write_csv(folder / f"part-{i}.csv", n, seed=i)) for i, n in enumerate(sizes)]
    order: list[tuple[str, int]] = []
    original = _ingest_ray.RayParsers._submit

    def submit(self, fn, *args):  # noqa: ANN001, ANN202 - RayParsers._submit, recorded
        if fn is _ingest_ray.parse_on_node:
            order.append((Path(args[0].path).name, args[0].index))
        return original(self, fn, *args)

    _ingest_ray.RayParsers._submit = submit
    try:
        on_ray = _ingest(paths, out / "mixed-ray", eng).manifest
    finally:
        _ingest_ray.RayParsers._submit = original
    local = _ingest(paths, out / "mixed-local", None, parsers=3).manifest
    return {"order": order, "ray": on_ray, "local": local}


def _start_s3(source: str) -> tuple[Any, str]:
    """A moto S3 server on 127.0.0.1 holding ``source`` as s3://lake/jobs.csv, the URI."""
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
    filesystem = pafs.S3FileSystem(
        endpoint_override=f"{host}:{port}", scheme="http", allow_bucket_creation=True
    )
    filesystem.create_dir("lake")
    with filesystem.open_output_stream("lake/jobs.csv") as stream:
        stream.write(Path(source).read_bytes())
    return server, "s3://lake/jobs.csv"


def _cli(sources: list[str], out: Path) -> dict:
    """``shardlearn ingest --engine ray`` on this cluster: its summary and its --json."""
    from typer.testing import CliRunner

    from shardlearn.cli import app

    args = ["ingest", *sources, "--label", "label", "--partitions", "3", "--engine", "ray"]
    args += ["--max-reject-rate", "0.5", "--overwrite", "--out"]
    text = CliRunner().invoke(app, [*args, str(out / "cli-text")])
    as_json = CliRunner().invoke(app, [*args, str(out / "cli-json"), "--json"])
    return {
        "text": text.output,
        "text_code": text.exit_code,
        "json": json.loads(as_json.output) if as_json.exit_code == 0 else as_json.output,
    }


def main(sources: list[str], out_dir: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from shardlearn.data import _ranges
    from shardlearn.engine import create_engine

    out = Path(out_dir)
    _ranges.RANGE_BYTES = max(os.path.getsize(sources[0]) // RANGES, 1)
    try:
        import moto.server  # noqa: F401
    except ImportError:
        s3 = None
    else:
        os.environ.update(S3_CREDENTIALS)
        s3 = _start_s3(sources[0])
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    result: dict = {}
    try:
        cluster.add_node(num_cpus=1)
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        result["nodes"] = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        result["driver_node"] = ray.get_runtime_context().get_node_id()
        eng = create_engine("ray")
        try:
            result["ray3"] = _ingest(sources, out / "ray3", eng).manifest
            result["ray2"] = _ingest(sources, out / "ray2", eng, parsers=2).manifest
            result["killed"] = _killed_run(sources, out / "killed", eng)
            result["cli"] = _cli(sources, out)
            result.update(_chosen_engines(sources, out, eng))
            result["pipeline"] = _pipeline(sources, out, eng)
            result["mixed"] = _mixed(out, eng)
            if s3 is not None:
                result["s3-local"] = _ingest([s3[1]], out / "s3-local", None, parsers=2).manifest
                result["s3-ray"] = _ingest([s3[1]], out / "s3-ray", eng).manifest
        finally:
            eng.close()
        eng = create_engine("ray", max_retries=0)
        try:
            result["failed"] = _killed_run(sources, out / "failed", eng)
        finally:
            eng.close()
    finally:
        ray.shutdown()
        cluster.shutdown()
        if s3 is not None:
            s3[0].stop()
    (out / "result.json").write_text(json.dumps(result, default=str))


def _terminate(signum, frame):
    raise SystemExit(f"terminated by signal {signum}")  # runs the finally: cluster.shutdown()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    main(sys.argv[1:-1], sys.argv[-1])
