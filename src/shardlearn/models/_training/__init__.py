"""Training plumbing shared by every model family (private to :mod:`shardlearn.models`).

* :mod:`.fitting` -- ``prepare_training``: the worker group, the classes, the cached feature
  block of each worker (``training_block``) for datasets and arrays alike; per-class weights
  (``resolve_class_weight``).
* :mod:`.execution` -- where a fit runs (in this process or on the workers) and the phase
  timings of a fit (``recording``, ``timed``).
* :mod:`.handoff` -- arrays handed to worker processes as memory-mapped parts.
* :mod:`.labels` -- labels of array input as class indices.
* :mod:`.scoring` -- confusion matrices and ROC-AUC on the workers' cached blocks.
* :mod:`.chunks` -- rows per cache-sized chunk of a block pass.

The modules here import nothing from a model family; every family imports them.
"""
