"""Classifiers trained across a WorkerGroup, and the Pipeline that pairs them with preprocessing.

Optional extras (torch) are imported only when their model is used.
"""

from __future__ import annotations

from shardlearn.models._registry import MODELS, model_class, model_class_by_type

__all__ = ["MODELS", "model_class", "model_class_by_type"]
