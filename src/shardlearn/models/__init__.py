"""Classifiers trained across a WorkerGroup, and the Pipeline that pairs them with preprocessing.

Optional extras (torch) are imported only when their model is used.
"""

from __future__ import annotations

from shardlearn.models._execution import recording, timed
from shardlearn.models._registry import MODELS, model_class, model_class_by_type
from shardlearn.models._scoring import score_split
from shardlearn.models.bayes import GaussianNB, MultinomialNB
from shardlearn.models.boosting import GradientBoostingClassifier
from shardlearn.models.cluster import KMeans
from shardlearn.models.decomposition import PCA
from shardlearn.models.forest import ExtraTreesClassifier, RandomForestClassifier
from shardlearn.models.linear import LinearSVC, LogisticRegression
from shardlearn.models.neural import ConvNetClassifier, MLPClassifier  # torch imported lazily
from shardlearn.models.pipeline import Pipeline
from shardlearn.models.semi_supervised import SelfTrainingClassifier
from shardlearn.models.sgd import SGDClassifier

__all__ = [
    "MODELS",
    "ConvNetClassifier",
    "ExtraTreesClassifier",
    "GaussianNB",
    "GradientBoostingClassifier",
    "KMeans",
    "LinearSVC",
    "LogisticRegression",
    "MLPClassifier",
    "MultinomialNB",
    "PCA",
    "Pipeline",
    "RandomForestClassifier",
    "SGDClassifier",
    "SelfTrainingClassifier",
    "model_class",
    "model_class_by_type",
    "recording",
    "score_split",
    "timed",
]
