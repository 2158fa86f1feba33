"""Neural-network classifiers on torch: MLPClassifier and ConvNetClassifier.

``_neural`` holds the estimators; ``_driver`` runs a fit on the worker group, ``_worker`` the
rank set-up shared by ``_ddp`` (data parallel, DistributedDataParallel) and ``_gpipe``
(pipeline parallel, the GPipe schedule); ``_torch`` builds the networks and the seeded dropout
masks, ``_warm`` what a warm start continues from and how an artifact carries it.

torch is imported only inside functions: importing this package never imports it.
"""

from shardlearn.models.neural_network._neural import ConvNetClassifier, MLPClassifier

__all__ = ["ConvNetClassifier", "MLPClassifier"]
