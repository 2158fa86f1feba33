"""The per-step gradient all-reduce of a small network through shared memory on one machine.

Why. Data-parallel training waits for one all-reduce per optimiser step. For a network of a
few MB the wait is latency, not bandwidth: gloo hands each all-reduce to its own thread and runs
a ring over loopback TCP, 0.7-1.7 ms for a (64, 64) MLP's 23 KB on a shared 2-core machine
-- longer than the step's compute on 512 rows (issue #23). Here it takes 12-16 us: every rank
copies its gradients into its slot of a file mapped by all ranks and writes one byte into a
FIFO to each other rank; when it has read one byte from every other rank, it sums the slots
in rank order. Every rank adds the same numbers in the same order, so the ranks keep equal
weights (the property gloo's all-reduce gives).

Where. The ranks of a fit all run on the driver's machine (the rendezvous is on loopback, see
:mod:`shardlearn.models.neural_network._driver`), so the driver creates the exchange (a private
directory, in ``/dev/shm`` when there is one, holding the slots file and one FIFO per ordered
pair of ranks) for each attempt to form the group and removes it when the attempt ends. Only a
network whose gradients fit in one bucket uses it; a bigger one is bandwidth-bound, and its
buckets go through gloo, overlapping backward
(:class:`~shardlearn.models.neural_network._ddp.GradientBuckets`).

Order and reuse. The slots are double-buffered by step parity: a rank overwrites its slot of
parity ``p`` two steps later, after every other rank signalled the step in between, which each
does only after summing step ``p``. A rank that leaves (fails, abandons its epoch, is killed)
closes its FIFO ends, so the others' next read ends at once instead of waiting for a timeout;
a rank that stops answering is an error after ``timeout`` seconds, as gloo's collectives are.
"""

from __future__ import annotations

import os
import select
import shutil
import tempfile
from typing import Any

import numpy as np

from shardlearn.exceptions import EngineError

__all__ = ["AVAILABLE", "SharedAllReduce", "create_exchange", "remove_exchange"]

#: FIFOs are POSIX: elsewhere (Windows) every all-reduce goes through gloo.
AVAILABLE = hasattr(os, "mkfifo")

_SLOTS = "slots"


def _fifo(directory: str, sender: int, receiver: int) -> str:
    return os.path.join(directory, f"{sender}-{receiver}")


def create_exchange(size: int, numel: int) -> str:
    """The directory of a new exchange for ``size`` ranks of ``numel`` float32 each."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    directory = tempfile.mkdtemp(prefix="shardlearn-allreduce-", dir=base)
    try:
        with open(os.path.join(directory, _SLOTS), "wb") as slots:
            slots.truncate(2 * size * numel * 4)
        for sender in range(size):
            for receiver in range(size):
                if sender != receiver:
                    os.mkfifo(_fifo(directory, sender, receiver), 0o600)
    except BaseException:
        remove_exchange(directory)
        raise
    return directory


def remove_exchange(directory: str | None) -> None:
    """Delete an exchange (the ranks' open ends and mappings stay valid until closed)."""
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


class SharedAllReduce:
    """One rank's end of an exchange: ``all_reduce(flat)`` sums ``flat`` over the ranks.

    Build it before the rank announces itself ready (it opens its reading ends), call
    :meth:`connect` once every rank has (it opens its writing ends), then a barrier of the
    process group, so that no rank reads before every writer is there.
    """

    def __init__(
        self, torch: Any, directory: str, rank: int, size: int, numel: int, timeout: float
    ) -> None:
        self.torch, self.directory, self.rank, self.size = torch, directory, rank, size
        self.timeout = timeout
        with open(os.path.join(directory, _SLOTS), "r+b") as file:
            # np.memmap keeps the mapping open as long as the array lives (not the file).
            mapped = np.memmap(file, dtype=np.float32, mode="r+", shape=(2, size, numel))
        self.slots = torch.from_numpy(mapped)
        self.peers = [peer for peer in range(size) if peer != rank]
        self.readers = []
        for peer in self.peers:
            fd = os.open(_fifo(directory, peer, rank), os.O_RDONLY | os.O_NONBLOCK)
            os.set_blocking(fd, True)
            self.readers.append(open(fd, "rb", buffering=0))  # noqa: SIM115 - closed with self
        self.writers: list[Any] = []
        self.parity = 0
        self.reductions = 0  # all-reduces done (tests count them)

    def connect(self) -> None:
        """Open the writing ends (every rank's reading ends must be open)."""
        for peer in self.peers:
            fd = os.open(_fifo(self.directory, self.rank, peer), os.O_WRONLY | os.O_NONBLOCK)
            os.set_blocking(fd, True)
            self.writers.append(open(fd, "wb", buffering=0))  # noqa: SIM115 - closed with self

    def all_reduce(self, flat: Any) -> None:
        """Replace ``flat`` (1-D float32, ``numel`` long) by its sum over the ranks."""
        slots = self.slots[self.parity]
        self.parity ^= 1
        slots[self.rank].copy_(flat)
        for peer, writer in zip(self.peers, self.writers, strict=True):
            try:
                writer.write(b"\0")
            except BrokenPipeError:  # its reading end is closed
                raise self._left(peer) from None
        for peer, reader in zip(self.peers, self.readers, strict=True):
            self._wait(peer, reader)
        flat.copy_(slots[0])
        for rank in range(1, self.size):
            flat.add_(slots[rank])
        self.reductions += 1

    def _wait(self, peer: int, reader: Any) -> None:
        if not select.select([reader], [], [], self.timeout)[0]:
            raise EngineError(
                f"Worker {peer} sent no gradients for {self.timeout:g} s: it is stuck or the "
                "machine is overloaded; try again with fewer workers."
            )
        if not reader.read(1):  # its writing end is closed
            raise self._left(peer)

    @staticmethod
    def _left(peer: int) -> EngineError:
        return EngineError(
            f"Worker {peer} left the process group during the gradient exchange (it failed "
            "or was stopped)."
        )
