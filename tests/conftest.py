"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

# Every property test draws the same examples on every run and machine, and no example
# database carries a failure from one run into the next (derandomize alone still replays
# saved failures first): what CI sees reproduces locally, whatever ran before.
settings.register_profile("shardlearn", derandomize=True, database=None)
settings.load_profile("shardlearn")

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The real datasets in ../shared/datasets; tests using them skip when it is absent."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATASETS}")
    return SHARED_DATASETS


# -- engines (owner: engine) -------------------------------------------------------------------
ENGINE_PARAMS = [pytest.param("local"), pytest.param("ray", marks=pytest.mark.ray)]


def _uses_ray(item: pytest.Item) -> bool:
    """Whether a test uses the session Ray cluster: marked ``ray`` (every ``engine_name`` and
    conformance Ray run is) or needing :func:`ray_cluster`, itself or through a fixture."""
    return item.get_closest_marker("ray") is not None or "ray_cluster" in getattr(
        item, "fixturenames", ()
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Note the file of the last test that uses Ray (after deselection), see
    :func:`ray_cluster`."""
    users = [item for item in session.items if _uses_ray(item)]
    session.config.stash[_LAST_RAY_MODULE] = users[-1].path if users else None


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    """Shut the session Ray cluster down once the module holding the last test that uses it
    is torn down (its module-scoped fixtures, e.g. a Ray Serve deployment, need Ray to the
    end): its raylet, GCS and idle workers would otherwise take CPU and memory from every
    later test."""
    result = yield
    last = item.config.stash.get(_LAST_RAY_MODULE, None)
    if item.path == last and (nextitem is None or nextitem.path != last):
        import sys

        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()
    return result


_LAST_RAY_MODULE = pytest.StashKey[Path | None]()


@pytest.fixture(scope="session")
def ray_cluster():
    """ONE real local Ray cluster (``ray.init(num_cpus=2)``) shared by the whole session.

    Started on first use (Ray takes a few seconds to start) and shut down after the last test
    that uses it (see :func:`pytest_runtest_teardown`), or at the end of the session. Tests
    normally get it through ``engine_name`` / ``any_engine``; a test that starts Ray in this
    process another way must be marked ``ray``. Skips when the ``ray`` extra is not installed.
    """
    import os
    import warnings

    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        # Ray workers must import test modules to unpickle module-level test functions;
        # pytest imports them by directory (rootdir-less "prepend" mode), so pass those along.
        tests_dir = Path(__file__).resolve().parent
        test_dirs = sorted({str(p.parent) for p in tests_dir.rglob("test_*.py")})
        previous = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join([*test_dirs, *filter(None, [previous])])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Ray's own start-up FutureWarnings
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(params=ENGINE_PARAMS)
def engine_name(request: pytest.FixtureRequest) -> str:
    """``"local"`` then ``"ray"``: parametrises a test over both engines.

    For ``"ray"`` the session Ray cluster (:func:`ray_cluster`) is started first, so
    ``shardlearn.engine.engine(engine_name, workers=2)`` connects to it instead of starting
    another one. Ray runs are marked ``ray`` (deselect with ``-m "not ray"``).
    """
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    return request.param


@pytest.fixture
def any_engine(engine_name: str):
    """A 2-worker engine of each kind, current (``get_engine()``) for the test, closed after.

    Use it in every engine-dependent test::

        def test_fit_matches_sklearn(any_engine):
            model = LogisticRegression().fit(dataset)     # runs on any_engine
            group = any_engine.workers(2)                  # or use it explicitly

    Functions sent to workers must be module-level (importable) functions.
    """
    from shardlearn.engine import engine

    with engine(engine_name, workers=2) as eng:
        yield eng


# -- object storage ----------------------------------------------------------------------------
#: Dummy credentials for moto's server (pyarrow's S3 client wants some).
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3 API (moto's server on 127.0.0.1, a free port) for one test module: "host:port".

    The credentials are in the environment while it runs, set before any worker or child
    process of the module starts (they inherit them) and restored afterwards; the S3 options
    travel in each URI (``?endpoint_override=HOST:PORT&scheme=http``). Skips without moto.
    """
    import os

    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {name: os.environ.get(name) for name in S3_CREDENTIALS}
    os.environ.update(S3_CREDENTIALS)
    yield f"{host}:{port}"
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    server.stop()


@pytest.fixture(scope="module")
def s3_bucket(s3_endpoint):
    """``s3_bucket(name)`` creates that bucket on :func:`s3_endpoint`; returns its filesystem."""
    import pyarrow.fs as pafs

    def create(name: str) -> pafs.S3FileSystem:
        filesystem = pafs.S3FileSystem(
            endpoint_override=s3_endpoint, scheme="http", allow_bucket_creation=True
        )
        filesystem.create_dir(name)
        return filesystem

    return create
