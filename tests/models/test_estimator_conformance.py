"""``shardlearn.testing.check_estimator`` on every estimator of the catalogue.

One test per (estimator, check), so one estimator's failure hides nothing else. The data,
datasets and engines are shared by the whole module (one ConformanceBench per engine kind).
On Ray the suite runs for one linear and one tree model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shardlearn._estimator_contracts import estimator_for
from shardlearn.models import MODELS, GaussianNB, RandomForestClassifier
from shardlearn.testing import (
    ESTIMATOR_CHECKS,
    ESTIMATOR_CONTRACTS,
    ConformanceBench,
    check_estimator,
    contracts_markdown,
)

#: (estimator, check) pairs that still fail, with the figure; strict, so a fix must remove them.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}

#: One linear and one tree model run the whole suite on Ray as well.
RAY_ESTIMATORS = ("logistic", "random_forest")


def _cases(names):
    for name in names:
        for check in ESTIMATOR_CHECKS:
            reason = KNOWN_FAILURES.get((name, check))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            yield pytest.param(name, check, marks=marks, id=f"{name}-{check}")


@pytest.fixture(scope="module")
def local_bench(tmp_path_factory):
    bench = ConformanceBench(tmp_path_factory.mktemp("conformance-local"), "local")
    yield bench
    bench.close()


@pytest.fixture(scope="module")
def ray_bench(tmp_path_factory, ray_cluster):
    bench = ConformanceBench(tmp_path_factory.mktemp("conformance-ray"), "ray")
    yield bench
    bench.close()


def test_every_catalogue_estimator_has_a_contract():
    assert set(MODELS) == set(ESTIMATOR_CONTRACTS)


@pytest.mark.parametrize(("name", "check"), list(_cases(ESTIMATOR_CONTRACTS)))
def test_estimator_conformance(name, check, local_bench):
    ESTIMATOR_CHECKS[check](estimator_for(ESTIMATOR_CONTRACTS[name]), local_bench)


@pytest.mark.ray
@pytest.mark.parametrize(("name", "check"), list(_cases(RAY_ESTIMATORS)))
def test_estimator_conformance_on_ray(name, check, ray_bench):
    ESTIMATOR_CHECKS[check](estimator_for(ESTIMATOR_CONTRACTS[name]), ray_bench)


class _WeightIgnoringNB(GaussianNB):
    """A deliberately broken estimator: accepts sample_weight and drops it."""

    def fit(self, X, y=None, *, engine=None, sample_weight=None, callback=None):
        return super().fit(X, y, engine=engine, callback=callback)


def test_check_estimator_reports_each_failing_check_with_its_figure(tmp_path):
    with pytest.raises(AssertionError) as failure:
        check_estimator(
            _WeightIgnoringNB(), workdir=tmp_path, checks=["clone_and_params", "sample_weight"]
        )
    message = str(failure.value)
    assert message.startswith("_WeightIgnoringNB fails sample_weight: weighted fit vs repeated")
    assert "tolerance 1e-07" in message and "clone_and_params" not in message


def test_check_estimator_seeds_an_unseeded_estimator_and_leaves_the_callers_alone(tmp_path):
    forest = RandomForestClassifier(n_estimators=5)
    check_estimator(forest, workdir=tmp_path, checks=["worker_count_invariance"])
    assert forest.random_state is None and not hasattr(forest, "classes_")


def test_contract_table_has_a_row_per_estimator():
    table = contracts_markdown().splitlines()
    assert len(table) == 2 + len(ESTIMATOR_CONTRACTS)
    assert any(row.startswith("| linear_svc | `sklearn.svm.LinearSVC` |") for row in table)


def test_readme_prints_the_contract_table_the_suite_checks():
    page = Path(__file__).resolve().parents[2] / "docs" / "explanation" / "guarantees.md"
    readme = page.read_text(encoding="utf-8")
    begin, end = "<!-- contracts:begin -->\n", "<!-- contracts:end -->"
    printed = readme[readme.index(begin) + len(begin) : readme.index(end)]
    assert printed.strip() == contracts_markdown().strip(), (
        "docs/explanation/guarantees.md's contract table differs from "
        "shardlearn.testing.contracts_markdown(); paste its output between the contracts markers"
    )
