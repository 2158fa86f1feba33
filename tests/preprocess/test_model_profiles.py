"""Model-aware preprocessing defaults (issue #22 finding 1): each estimator's declared profile,
the defaults a Pipeline gives ``Preprocessor.auto``, and the memory check before a dense fit."""

from __future__ import annotations

import pytest

import shardlearn as sl
from shardlearn.data import write_dataset
from shardlearn.data.demo import generate_loans
from shardlearn.exceptions import ResourceError
from shardlearn.models._registry import MODELS
from shardlearn.preprocess import Preprocessor, estimator_profile
from shardlearn.preprocess.profiles import (
    COMPACT_TEXT_FEATURES,
    ESTIMATOR_PROFILES,
    MEMORY_BUDGET_ENV,
)

WIDE_TEXT = 2**18


@pytest.fixture(scope="module")
def loans(tmp_path_factory):
    """300 demo loan rows: numbers, categories and the free-text 'description' column."""
    out = tmp_path_factory.mktemp("profiles") / "loans"
    return write_dataset(generate_loans(300, seed=0), out, label="default", partitions=2)


def _text_features(pre: Preprocessor) -> int:
    return sum(name.startswith("description#tok") for name in pre.feature_names_out_)


def test_loans_have_a_text_column(loans):
    assert loans.schema["description"].kind == "text"


def test_default_auto_gives_a_tree_model_a_few_hundred_text_features(loans):
    model = sl.Pipeline(Preprocessor.auto(loans.schema), sl.XGBoostClassifier(n_estimators=2)).fit(
        loans, engine="local"
    )
    assert model.preprocessor.profile == "compact"
    assert _text_features(model.preprocessor) == COMPACT_TEXT_FEATURES
    assert model.preprocessor.n_features_out_ < 400


def test_default_auto_keeps_wide_hashed_text_for_a_linear_model(loans):
    model = sl.Pipeline(Preprocessor.auto(loans.schema), sl.LogisticRegression(max_iter=2))
    with pytest.warns(sl.exceptions.ConvergenceWarning):
        model.fit(loans, engine="local")
    assert model.preprocessor.profile == "wide_sparse"
    assert _text_features(model.preprocessor) == WIDE_TEXT
    assert model.preprocessor.sparse_


@pytest.mark.parametrize(
    ("estimator", "profile"),
    [
        (sl.LogisticRegression(), "wide_sparse"),
        (sl.LinearSVC(), "wide_sparse"),
        (sl.SGDClassifier(), "wide_sparse"),
        (sl.MultinomialNB(), "wide_sparse"),
        (sl.GaussianNB(), "compact"),
        (sl.RandomForestClassifier(), "compact"),
        (sl.ExtraTreesClassifier(), "compact"),
        (sl.XGBoostClassifier(), "compact"),
        (sl.MLPClassifier(), "dense"),
        (sl.KMeans(), "dense"),
        (sl.PCA(), "dense"),
        (sl.SelfTrainingClassifier("logistic"), "wide_sparse"),
        (sl.SelfTrainingClassifier("random_forest"), "compact"),
    ],
)
def test_each_estimator_declares_its_profile(estimator, profile):
    assert estimator_profile(estimator) == profile
    assert estimator_profile(sl.Pipeline(Preprocessor({}), estimator)) == profile


def test_every_registered_model_declares_an_allowed_profile():
    for name, cls in MODELS.items():
        assert "_preprocess_profile" in vars(cls) or any(
            "_preprocess_profile" in vars(base) for base in cls.__mro__[1:]
        ), name
        assert estimator_profile(cls()) in ESTIMATOR_PROFILES, name


def test_a_profile_outside_the_allow_list_is_refused_and_none_means_compact():
    class Odd:
        _preprocess_profile = "os.system"

    with pytest.raises(ValueError, match="preprocessing profile 'os.system'"):
        estimator_profile(Odd())
    assert estimator_profile(object()) == "compact"


def test_an_option_the_spec_sets_is_kept_whatever_the_model(loans):
    spec = {"auto": True, "columns": {"description": {"kind": "text", "n_features": 1024}}}
    pre = Preprocessor.from_spec(spec, loans.schema).for_estimator(sl.RandomForestClassifier())
    assert pre.column_widths()["description"] == 1024
    assert Preprocessor.auto(loans.schema, profile="compact").column_widths()["description"] == (
        COMPACT_TEXT_FEATURES
    )


def test_a_dense_model_on_a_too_wide_spec_fails_before_fitting_naming_the_column(
    loans, monkeypatch
):
    monkeypatch.setenv(MEMORY_BUDGET_ENV, str(50 * 2**20))  # 50 MiB; the spec needs ~630 MiB
    spec = {"auto": True, "columns": {"description": {"kind": "text", "n_features": WIDE_TEXT}}}
    model = sl.Pipeline(Preprocessor.from_spec(spec, loans.schema), sl.KMeans(n_clusters=2))
    with pytest.raises(ResourceError) as caught:
        model.fit(loans, engine="local")
    message = str(caught.value)
    assert "\n" not in message
    assert "Column 'description' alone is 262,144 features" in message
    assert "n_features: 256" in message and "--preprocess" in message
    assert MEMORY_BUDGET_ENV in message
    # Nothing was fitted: neither the preprocessor nor the model.
    assert not hasattr(model.preprocessor, "transformers_")
    assert not hasattr(model.estimator, "cluster_centers_")


def test_the_same_budget_fits_the_dense_model_with_the_default_compact_text(loans, monkeypatch):
    monkeypatch.setenv(MEMORY_BUDGET_ENV, str(50 * 2**20))
    model = sl.Pipeline(Preprocessor.auto(loans.schema), sl.KMeans(n_clusters=2, n_init=1))
    model.fit(loans, engine="local")
    assert _text_features(model.preprocessor) == COMPACT_TEXT_FEATURES
    assert model.estimator.cluster_centers_.shape == (2, model.preprocessor.n_features_out_)


def test_a_pca_step_makes_the_preprocessor_compact_and_is_checked(loans, monkeypatch):
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "1000")
    model = sl.Pipeline(Preprocessor.auto(loans.schema), sl.PCA(2), sl.LogisticRegression())
    with pytest.raises(ResourceError, match="PCA densifies"):
        model.fit(loans, engine="local")
    assert model.preprocessor.profile == "compact"
