"""Linear classifiers: LogisticRegression and LinearSVC (driver-side L-BFGS over the workers'
loss and gradient sums) and SGDClassifier (parallel SGD with parameter averaging).

``_linear`` and ``_sgd`` hold the estimators; ``_lbfgs`` the optimiser, ``_losses`` the block
kernels of each loss and ``_dense_kernels`` their compiled dense passes. SGD shares the
losses, the L-BFGS iteration record and the class weighting of ``_linear``.
"""

from shardlearn.models.linear_model._linear import LinearSVC, LogisticRegression
from shardlearn.models.linear_model._sgd import SGDClassifier

__all__ = ["LinearSVC", "LogisticRegression", "SGDClassifier"]
