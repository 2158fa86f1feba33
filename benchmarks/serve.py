"""Prediction-service throughput and latency: shardlearn serve vs a minimal Flask app.

Both serve a logistic regression trained on the same generated loan data (shardlearn: its
Pipeline from the registry; Flask: scikit-learn's ColumnTransformer + LogisticRegression, the
usual "small Flask app around predict"). The load generator is ``wrk`` (Debian package) when
installed, else a bounded asyncio httpx loop, with 32 keep-alive connections; it shares the
machine's cores with the servers, which costs both alike.

shardlearn runs in its best configuration for the machine: ``shardlearn serve --workers N``
with N = the number of cores (uvicorn with httptools and uvloop, one process per core, each
micro-batching its concurrent requests, 2 ms max wait). Flask is the usual threaded
single-process app. ``--workers 1`` measures a single shardlearn process instead.

Beside throughput and latency, each case reports the CPU time (user + system, from ``/proc``)
the server's processes used per request while the load ran (``n/a`` where there is no
``/proc``). It depends much less than requests per second on what else the machine runs, but
not nothing: on a 2-core machine at load average 15 it still moved by about ±15% between runs
(cache and loopback-TCP work, and smaller micro-batches when the server gets less CPU), so
compare code versions by alternating several runs.

The same shardlearn server is also measured on its Open Inference Protocol route
(``POST /v2/models/loans/infer``, single row, the body built by ``tritonclient``'s
``generate_request_body`` with JSON tensor data); it is skipped without ``tritonclient``
(``pip install shardlearn[interop]``).

And the same app deployed with Ray Serve (``shardlearn serve --engine ray --replicas N``, N =
``--workers``, on a local Ray started by the command): requests go through Ray Serve's HTTP
proxy to the replicas. Its CPU column counts the whole local Ray (proxy, controller, replicas,
Ray's own daemons). It is skipped without Ray Serve (``pip install shardlearn[ray]``).

    python benchmarks/serve.py            # 30 s per case
    python benchmarks/serve.py --quick    # 5 s per case
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np

from shardlearn.data import write_dataset
from shardlearn.data.demo import LABEL, generate_loans
from shardlearn.engine import engine
from shardlearn.models import LogisticRegression, Pipeline
from shardlearn.preprocess import Preprocessor
from shardlearn.registry import Registry
from shardlearn.serve import TokenStore

TRAIN_ROWS = 50_000
CONNECTIONS = 32
FLASK_APP = textwrap.dedent(
    """
    import json, sys
    import numpy as np, pandas as pd
    from flask import Flask, request, jsonify
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = pd.read_parquet(sys.argv[1])
    label = sys.argv[3]
    numeric = [c for c in frame.columns if c != label and frame[c].dtype.kind in "if"]
    categorical = [c for c in frame.columns if c != label and c not in numeric]
    model = make_pipeline(
        ColumnTransformer([
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]),
        LogisticRegression(max_iter=1000),
    ).fit(frame.drop(columns=[label]).fillna({c: "missing" for c in categorical}), frame[label])
    app = Flask(__name__)

    @app.post("/predict")
    def predict():
        rows = pd.DataFrame(request.get_json()["records"])
        proba = model.predict_proba(rows.fillna({c: "missing" for c in categorical}))
        labels = model.classes_[np.argmax(proba, axis=1)]
        return jsonify(predictions=labels.tolist(), probabilities=proba.tolist())

    app.run(host="127.0.0.1", port=int(sys.argv[2]), threaded=True)
    """
)
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = io.open("{body}"):read("*a")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), errors))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(
    url: str, process: subprocess.Popen, timeout: float = 180.0, status: int | None = None
) -> None:
    """Until ``url`` answers (with ``status``, when given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            answer = httpx.get(url, timeout=1.0)
            if status is None or answer.status_code == status:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server at {url} did not start in {timeout:.0f} s")


def load_wrk(url: str, body: bytes, token: str, seconds: int, tmp: Path) -> dict:
    (tmp / "body.json").write_bytes(body)
    script = tmp / "post.lua"
    script.write_text(WRK_SCRIPT.format(body=tmp / "body.json", token=token))
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", str(script), url]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(x for x in output.splitlines() if x.startswith("RESULT"))
    requests, duration_us, p50, p99, errors = (int(v) for v in line.split()[1:])
    return {
        "requests": requests,
        "requests_per_s": requests / (duration_us / 1e6),
        "p50_ms": p50 / 1000,
        "p99_ms": p99 / 1000,
        "errors": errors,
    }


def load_httpx(url: str, body: bytes, token: str, seconds: int) -> dict:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def worker(client: httpx.AsyncClient, stop: float, latencies: list, errors: list):
        while time.monotonic() < stop:
            started = time.perf_counter()
            response = await client.post(url, content=body, headers=headers)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                errors.append(response.status_code)

    async def run() -> tuple[list, list, float]:
        latencies: list[float] = []
        errors: list[int] = []
        started = time.monotonic()
        limits = httpx.Limits(max_connections=CONNECTIONS)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            stop = started + seconds
            await asyncio.gather(
                *(worker(client, stop, latencies, errors) for _ in range(CONNECTIONS))
            )
        return latencies, errors, time.monotonic() - started

    latencies, errors, elapsed = asyncio.run(run())
    return {
        "requests": len(latencies),
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(latencies, 50) * 1000),
        "p99_ms": float(np.percentile(latencies, 99) * 1000),
        "errors": len(errors),
    }


def process_tree_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by ``pid`` and its living descendants.

    None without ``/proc`` (not Linux). uvicorn's ``--workers`` processes are children of the
    server process; a descendant that exits during the load takes its time with it.
    """
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        proc = Path(f"/proc/{current}")
        try:
            # Fields 14 and 15 (utime, stime) after the command name, which may hold spaces.
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            children = [(task / "children").read_text() for task in (proc / "task").iterdir()]
        except OSError:
            if current == pid:
                return None
            continue  # a descendant that just exited
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        todo.extend(int(child) for text in children for child in text.split())
    return total


def measure(
    url: str, body: bytes, token: str, seconds: int, tmp: Path, server: subprocess.Popen
) -> dict:
    """The load's result, with the server's CPU microseconds per request (None if unknown)."""
    cpu_before = process_tree_cpu(server.pid)
    if shutil.which("wrk"):
        result = {"generator": "wrk", **load_wrk(url, body, token, seconds, tmp)}
    else:
        result = {"generator": "httpx", **load_httpx(url, body, token, seconds)}
    cpu_after = process_tree_cpu(server.pid)
    known = cpu_before is not None and cpu_after is not None and result["requests"]
    cpu = (cpu_after - cpu_before) / result["requests"] * 1e6 if known else None
    return {**result, "server_cpu_us_per_request": cpu}


def train_and_register(tmp: Path) -> tuple[Registry, str, Path]:
    table = generate_loans(TRAIN_ROWS, seed=0)
    dataset = write_dataset(table, tmp / "data", LABEL, partitions=2)
    with engine("local", workers=1):
        model = Pipeline(Preprocessor.auto(dataset.schema), LogisticRegression()).fit(dataset)
    registry = Registry(tmp / "models")
    registry.promote("loans", registry.register(model, "loans").version, "production")
    token = TokenStore(tmp / "models" / "tokens").create("bench")
    parquet = tmp / "train.parquet"
    import pyarrow.parquet as pq

    pq.write_table(table, parquet)
    return registry, token, parquet


def start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=120)  # a local Ray takes a while to shut down on a busy machine
    except subprocess.TimeoutExpired:
        process.kill()


def bodies() -> dict[str, bytes]:
    records = generate_loans(100, seed=1).drop_columns([LABEL]).to_pylist()
    return {
        "1 row": json.dumps({"records": records[:1]}).encode(),
        "100 rows": json.dumps({"records": records}).encode(),
    }


def v2_body(base: str, token: str) -> bytes | None:
    """A single-row Open Inference Protocol request in tritonclient's own format (JSON data).

    The tensors follow the server's model metadata; None without tritonclient.
    """
    try:
        from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput
    except ImportError:
        print("  tritonclient is not installed: the V2 route is not measured", flush=True)
        return None
    headers = {"Authorization": f"Bearer {token}"}
    metadata = httpx.get(f"{base}/v2/models/loans", headers=headers).json()
    record = generate_loans(100, seed=1).drop_columns([LABEL]).to_pylist()[0]
    inputs = []
    for spec in metadata["inputs"]:
        dtype = object if spec["datatype"] == "BYTES" else np.float64
        tensor = InferInput(spec["name"], [1], spec["datatype"])
        tensor.set_data_from_numpy(np.array([record[spec["name"]]], dtype=dtype), binary_data=False)
        inputs.append(tensor)
    outputs = [InferRequestedOutput(o["name"], binary_data=False) for o in metadata["outputs"]]
    body, json_size = InferenceServerClient.generate_request_body(inputs, outputs=outputs)
    if json_size is not None:  # wrk's script sends no Inference-Header-Content-Length
        raise RuntimeError("the V2 benchmark body must hold JSON tensor data only")
    return body


def run_server(
    name: str,
    command: list[str],
    url: str,
    health: str,
    token: str,
    args,
    tmp,
    v2: str = "",
    health_status: int | None = None,
):
    """Measure each body on ``url``; with ``v2`` (the server's base URL) its V2 route too.

    The server is up once ``health`` answers (with ``health_status``, when given).
    """
    process = start(command)
    try:
        wait_until_up(health, process, timeout=300, status=health_status)
        cases = {s: (url, body, 100 if s == "100 rows" else 1) for s, body in bodies().items()}
        if v2 and (body := v2_body(v2, token)) is not None:
            cases["1 row V2"] = (f"{v2}/v2/models/loans/infer", body, 1)
        results = {}
        for size, (case_url, body, rows) in cases.items():
            results[size] = measure(case_url, body, token, args.seconds, tmp, process)
            results[size]["predictions_per_s"] = results[size]["requests_per_s"] * rows
            print(f"  {name:<10} {size:>8}: {json.dumps(results[size])}", flush=True)
        return results
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5 s per case instead of 30 s")
    parser.add_argument("--seconds", type=int, default=None, help="seconds per case")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="shardlearn server processes (default: one per core, %(default)s here)",
    )
    args = parser.parse_args()
    args.seconds = args.seconds or (5 if args.quick else 30)
    with tempfile.TemporaryDirectory(prefix="shardlearn-bench-serve-") as name:
        tmp = Path(name)
        registry, token, parquet = train_and_register(tmp)
        port = free_port()
        shardlearn = run_server(
            "shardlearn",
            [sys.executable, "-c", "from shardlearn.cli import main; main()", "serve",
             "--registry", str(registry.root), "--port", str(port),
             "--workers", str(args.workers)],
            f"http://127.0.0.1:{port}/v1/models/loans/predict",
            f"http://127.0.0.1:{port}/healthz",
            token, args, tmp, v2=f"http://127.0.0.1:{port}",
        )  # fmt: skip
        ray_serve = run_ray_serve(registry, token, args, tmp)
        (tmp / "flask_app.py").write_text(FLASK_APP)
        port = free_port()
        flask = run_server(
            "flask",
            [sys.executable, str(tmp / "flask_app.py"), str(parquet), str(port), LABEL],
            f"http://127.0.0.1:{port}/predict",
            f"http://127.0.0.1:{port}/predict",
            token, args, tmp,
        )  # fmt: skip
    print_table(shardlearn, ray_serve, flask, args)


def run_ray_serve(registry: Registry, token: str, args, tmp: Path) -> dict:
    """The same app as ``--workers`` Ray Serve replicas; empty without Ray Serve."""
    try:
        import ray.serve  # noqa: F401
    except ImportError:
        print("  Ray Serve is not installed: the Ray deployment is not measured", flush=True)
        return {}
    port = free_port()
    return run_server(
        "Ray Serve",
        [sys.executable, "-c", "from shardlearn.cli import main; main()", "serve",
         "--registry", str(registry.root), "--port", str(port), "--engine", "ray",
         "--replicas", str(args.workers)],
        f"http://127.0.0.1:{port}/v1/models/loans/predict",
        f"http://127.0.0.1:{port}/readyz",
        token, args, tmp, health_status=200,
    )  # fmt: skip


def print_table(shardlearn: dict, ray_serve: dict, flask: dict, args: argparse.Namespace) -> None:
    generator = shardlearn["1 row"]["generator"]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"\nServing a logistic model, {args.seconds} s per case, {CONNECTIONS} connections "
        f"({generator}), {os.cpu_count()} cores shared with the load generator; shardlearn "
        f"with {args.workers} worker process(es) or Ray Serve replica(s), Flask threaded; "
        f"load average at the end "
        f"{load}\n"
    )
    print(
        "| request | server | predictions/s | p50 ms | p99 ms | server CPU µs/request | "
        "errors | vs Flask | CPU vs Flask |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = [
        ("1 row", "shardlearn", shardlearn["1 row"]),
        ("1 row", "shardlearn V2 (OIP)", shardlearn.get("1 row V2")),
        ("1 row", "shardlearn on Ray Serve", ray_serve.get("1 row")),
        ("1 row", "Flask", flask["1 row"]),
        ("100 rows", "shardlearn", shardlearn["100 rows"]),
        ("100 rows", "shardlearn on Ray Serve", ray_serve.get("100 rows")),
        ("100 rows", "Flask", flask["100 rows"]),
    ]
    for size, name, result in rows:
        if result is not None:
            ratio = result["predictions_per_s"] / flask[size]["predictions_per_s"]
            cpu, flask_cpu = (r["server_cpu_us_per_request"] for r in (result, flask[size]))
            cpu_text = "n/a" if cpu is None else f"{cpu:,.0f}"
            cpu_ratio = "n/a" if cpu is None or not flask_cpu else f"{cpu / flask_cpu:.2f}×"
            print(
                f"| {size} | {name} | {result['predictions_per_s']:,.0f} | "
                f"{result['p50_ms']:.1f} | {result['p99_ms']:.1f} | {cpu_text} | "
                f"{result['errors']} | {ratio:.2f}× | {cpu_ratio} |"
            )


if __name__ == "__main__":
    main()
