"""Ingest on a real 3-node Ray cluster: the byte ranges are parsed on every node, the dataset
is byte-identical to the local engine's (1 and 2 parsers), and a range task whose worker is
killed for real is retried (or, without retries, the ingest fails and writes no manifest).
Ingest given no engine parses on the ``with engine(...)`` block's or ``$SHARDLEARN_ENGINE``'s
Ray engine, a pipeline's ingest stage on the pipeline's, and the largest ranges start first.

The cluster runs in a child process (:mod:`ray_ingest_run`, as test_multinode.py does), ONE
run for every test of this module: three raylets take most of a minute to start.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from cluster_helpers import write_csv
from ray_ingest_run import RANGES, _ingest

from shardlearn.data import Dataset
from shardlearn.data import _ranges as ranges_module

pytest.importorskip("ray.cluster_utils")

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

HERE = Path(__file__).resolve().parent


def _sources(root: Path) -> list[str]:
    """A CSV cut into ranges (with rejects and a quoted newline) and a .gz read as a stream."""
    csv = write_csv(root / "jobs.csv", n=3000, seed=1)
    lines = csv.read_text().splitlines()
    lines[100] = "not-a-number,clerk,high"  # a value that does not parse
    lines[900] = "41.0,nurse,low,extra"  # too many fields
    lines[1500] = '39.5,"pi\nlot",high'  # a quoted newline: one row on two lines
    lines[2200] = "37.0,chef,"  # no label
    csv.write_text("\n".join(lines) + "\n")
    packed = root / "more.csv.gz"
    packed.write_bytes(gzip.compress(write_csv(root / "more.csv", n=200, seed=2).read_bytes()))
    return [str(csv), str(packed)]


def _fingerprint(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*.parquet"))
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray_ingest")
    sources = _sources(root)
    range_bytes = max(os.path.getsize(sources[0]) // RANGES, 1)
    local = {}
    with mock.patch.object(ranges_module, "RANGE_BYTES", range_bytes):
        for parsers in (1, 2):
            local[parsers] = _ingest(sources, root / f"local{parsers}", None, parsers=parsers)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    )
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "ray_ingest_run.py"), *sources, str(root)],
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
        pytest.fail(f"the 3-node ingest timed out:\n{log[-3000:]}")
    assert proc.returncode == 0, log[-3000:]
    result = json.loads((root / "result.json").read_text())
    return root, local, result


def test_the_ranges_are_parsed_on_all_three_nodes(run):
    root, local, result = run
    assert len(result["nodes"]) == 3
    for name in ("ray3", "ray2"):
        manifest = result[name]
        assert sorted(manifest["nodes"]) == result["nodes"]
        assert all(rows > 0 for rows in manifest["nodes"].values()), manifest["nodes"]
        assert sum(manifest["nodes"].values()) == manifest["rows_read"]
        assert manifest["rows_read"] == manifest["rows_written"] + manifest["rows_rejected"]
    assert result["ray3"]["parsers"] == 3 and result["ray2"]["parsers"] == 2
    assert result["ray3"]["ranges"] == local[2].manifest["ranges"] > RANGES // 2


def test_ray_writes_the_local_engines_dataset_byte_for_byte(run):
    root, local, result = run
    expected = _fingerprint(root / "local1")
    assert expected == _fingerprint(root / "local2")
    assert any(name.startswith("_rejects") for name in expected)
    for name in ("ray3", "ray2", "killed"):
        assert _fingerprint(root / name) == expected, name
        manifest = Dataset.open(str(root / name)).manifest
        for key in ("rows_read", "rows_written", "rows_rejected", "class_counts", "rejects"):
            assert manifest[key] == local[1].manifest[key], (name, key)
    assert local[1].manifest["rows_rejected"] == 3  # bad number, extra field, no label


def test_a_range_task_killed_mid_ingest_is_retried_or_the_ingest_fails_cleanly(run):
    root, local, result = run
    killed, failed = result["killed"], result["failed"]
    assert killed["killed_pid"] and "error" not in killed and killed["manifest_written"]
    assert failed["killed_pid"] and not failed["manifest_written"]
    assert "DataError" in failed["error"] and "nothing was written" in failed["error"]
    assert not (root / "failed").exists() or not list((root / "failed").rglob("*.parquet"))


def test_an_s3_file_is_cut_into_ranges_read_by_every_node(run):
    root, local, result = run
    if "s3-ray" not in result:
        pytest.skip("moto is not installed")
    on_ray, streamed = result["s3-ray"], result["s3-local"]
    assert streamed["ranges"] == 1  # the local engine reads an s3:// file as one stream
    assert on_ray["ranges"] == result["ray3"]["ranges"] - 1  # the .gz is not in this run
    assert sorted(on_ray["nodes"]) == result["nodes"]
    assert all(rows > 0 for rows in on_ray["nodes"].values()), on_ray["nodes"]
    assert _fingerprint(root / "s3-ray") == _fingerprint(root / "s3-local")
    assert on_ray["rows_rejected"] == streamed["rows_rejected"] == 3


def test_the_cli_summary_and_json_show_the_parsers_and_the_rows_of_each_node(run):
    root, local, result = run
    cli = result["cli"]
    assert cli["text_code"] == 0, cli["text"]
    # Which nodes a run's tasks land on is Ray's SPREAD placement, best effort (that every
    # node parses is test_the_ranges_are_parsed_on_all_three_nodes'); the summary must show
    # the parsers and, for every node that parsed, its rows, adding up to the rows read.
    shown = re.search(
        r"parsed by 3 parsers \(\d+ ranges\) on (\d) Ray nodes? \(rows: ([^)]*)\)", cli["text"]
    )
    assert shown is not None, cli["text"]
    per_node = dict(part.rsplit(" ", 1) for part in shown.group(2).split(", "))
    assert len(per_node) == int(shown.group(1)) >= 1, cli["text"]
    assert set(per_node) <= {node[:8] for node in result["nodes"]}, cli["text"]
    assert sum(int(rows.replace(",", "")) for rows in per_node.values()) == 3200, cli["text"]
    summary = cli["json"]
    assert isinstance(summary, dict), summary
    assert summary["parsers"] == 3 and set(summary["nodes"]) <= set(result["nodes"])
    assert sum(summary["nodes"].values()) == summary["rows_read"] == 3200


def test_without_engine_ingest_parses_on_the_with_blocks_or_the_environments_ray(run):
    root, local, result = run
    expected = _fingerprint(root / "local1")
    for name in ("context", "env"):
        manifest = result[name]
        assert sorted(manifest["nodes"]) == result["nodes"], name
        assert all(rows > 0 for rows in manifest["nodes"].values()), (name, manifest["nodes"])
        assert manifest["parsers"] == 3, name  # the cluster's CPUs
        assert _fingerprint(root / name) == expected, name
    # An explicit local engine wins over the with block: threads, no nodes.
    assert "nodes" not in result["explicit"] and result["explicit"]["parsers"] == 2
    assert _fingerprint(root / "explicit") == expected


def test_a_pipelines_ingest_stage_parses_on_every_node_of_its_ray_engine(run):
    root, local, result = run
    manifest = result["pipeline"]
    assert sorted(manifest["nodes"]) == result["nodes"]
    assert all(rows > 0 for rows in manifest["nodes"].values()), manifest["nodes"]
    assert sum(manifest["nodes"].values()) == manifest["rows_read"] == 3200
    assert _fingerprint(root / "pipeline") == _fingerprint(root / "local1")


def test_on_ray_the_largest_ranges_start_first_and_the_output_keeps_input_order(run):
    """Five small files, then one much larger: its ranges are submitted right after the first
    small file's, as the local thread pool starts them; the dataset is the threads' one."""
    root, local, result = run
    mixed = result["mixed"]
    order = [tuple(item) for item in mixed["order"]]
    assert order[0] == ("part-0.csv", 0)
    assert order[1][0] == "part-5.csv"  # the largest range in the look-ahead
    assert sum(name == "part-5.csv" for name, _ in order) >= 3
    assert len(order) == len(set(order)) == mixed["ray"]["ranges"] == mixed["local"]["ranges"]
    assert _fingerprint(root / "mixed-ray") == _fingerprint(root / "mixed-local")
    assert mixed["ray"]["rows_read"] == mixed["local"]["rows_read"] == 1200
