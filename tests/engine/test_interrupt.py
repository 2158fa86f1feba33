"""Ctrl-C (SIGINT) or a killed driver leaves no worker process behind."""

from __future__ import annotations

import signal
import subprocess
import textwrap

import psutil
import pytest

from shardlearn.testing import interruptible, wait_for_file

DRIVER = textwrap.dedent(
    """
    import sys
    from shardlearn.engine import TaskGraph, engine
    from shardlearn.testing import announce_and_wait

    workdir = sys.argv[1]
    with engine("local", workers=2) as eng:
        group = eng.workers(2)  # an idle stateful group next to the running graph
        graph = TaskGraph()
        for name in ("a", "b"):
            graph.add(name, announce_and_wait, workdir, name)
        graph.add("c", announce_and_wait, workdir, "c", graph.ref("a"), graph.ref("b"))
        graph.run(eng, progress=False)
    """
)


def _start_driver(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    driver = subprocess.Popen(interruptible(script, tmp_path), cwd=tmp_path)
    try:
        wait_for_file(tmp_path / "a.pid")
        wait_for_file(tmp_path / "b.pid")
    except BaseException:
        driver.kill()
        raise
    return driver


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_interrupted_driver_leaves_no_worker_process(tmp_path, signum):
    driver = _start_driver(tmp_path)
    children = psutil.Process(driver.pid).children(recursive=True)
    task_pids = {int((tmp_path / f"{name}.pid").read_text()) for name in ("a", "b")}
    assert task_pids <= {child.pid for child in children}
    assert len(children) >= 4  # two task processes and two group workers, at least

    driver.send_signal(signum)
    driver.wait(timeout=60)
    # SIGINT: the driver stops its workers on the way out. SIGKILL: it cannot, and the
    # workers' parent watchdog ends them.
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert alive == [], f"worker processes left behind: {alive}"
    assert not (tmp_path / "c.pid").exists()
