"""Tree ensembles: RandomForestClassifier and ExtraTreesClassifier (scikit-learn's trees, shared
out over the workers) and XGBoostClassifier (XGBoost in one process or across the workers).

``_forest`` and ``_forest_kernels`` (its compiled tree walk) hold the forests; ``_xgboost`` the
boosting estimator, ``_xgb_collective`` its worker protocol (tracker, checkpoints) and
``_booster_file`` the checks a booster read from an artifact passes before XGBoost parses it. The
forests and XGBoost share nothing but :mod:`shardlearn.models._training`.
"""

from shardlearn.models.ensemble._forest import ExtraTreesClassifier, RandomForestClassifier
from shardlearn.models.ensemble._xgboost import XGBoostClassifier

__all__ = ["ExtraTreesClassifier", "RandomForestClassifier", "XGBoostClassifier"]
