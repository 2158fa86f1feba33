"""The models a server holds, loaded from the registry and swapped when a new one is promoted.

A served ``NAME`` follows the registry: its production version whenever one exists, else its
newest version, re-resolved on every refresh -- so a server started before the first promotion
switches to production once there is one, and reports the stage it serves (``NAME@STAGE``
follows that stage, ``NAME:VERSION`` stays pinned).

A served model is immutable: a promotion loads the new version beside the old one and then
replaces the reference in one assignment. A request that already holds the old
:class:`ServedModel` finishes on it; the next request gets the new one. Loading happens in a
thread, so requests keep being answered while a large model is read and verified.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa

from shardlearn.exceptions import ArtifactError
from shardlearn.registry import ModelVersion, Registry
from shardlearn.serve.schemas import columns_to_table

__all__ = ["Inference", "ModelHost", "ServedModel"]

log = logging.getLogger("shardlearn.serve")

_PINNED = re.compile(r":\d+$")


@dataclass(frozen=True)
class Inference:
    """Predicted labels and, when the model has them, class probabilities."""

    labels: np.ndarray
    proba: np.ndarray | None

    def rows(self, start: int, stop: int) -> Inference:
        """The slice of rows ``start:stop``."""
        proba = None if self.proba is None else self.proba[start:stop]
        return Inference(self.labels[start:stop], proba)


@dataclass(frozen=True)
class ServedModel:
    """One loaded model version and what the API shows about it."""

    name: str
    version: int
    reference: str
    model_type: str
    stage: str | None
    model: Any = field(repr=False)
    classes: list[Any] = field(default_factory=list)
    input_schema: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None

    def infer_columns(self, columns: dict[str, list[Any]]) -> Inference:
        """:meth:`infer` on validated columns (see :func:`~.schemas.records_to_columns`)."""
        return self.infer(columns_to_table(columns, self.input_schema))

    def infer(self, table: pa.Table) -> Inference:
        """Labels, and probabilities when the model has them, for the rows of ``table``."""
        data = table if self._takes_tables else self._as_matrix(table)
        if hasattr(self.model, "predict_proba"):
            proba = np.asarray(self.model.predict_proba(data), dtype=np.float64)
            labels = np.asarray(self.classes, dtype=object)[np.argmax(proba, axis=1)]
            return Inference(labels, proba)
        return Inference(np.asarray(self.model.predict(data), dtype=object), None)

    @property
    def _takes_tables(self) -> bool:
        # A Pipeline (or a bare Preprocessor-backed model) reads raw columns; a bare estimator
        # trained on arrays takes a matrix in its input schema's column order.
        return hasattr(self.model, "preprocessor")

    def _as_matrix(self, table: pa.Table) -> np.ndarray:
        return np.column_stack(
            [table.column(c["name"]).to_numpy(zero_copy_only=False) for c in self.columns]
        ).astype(np.float64)

    @property
    def columns(self) -> list[dict[str, Any]]:
        return list((self.input_schema or {}).get("columns", []))


def _default_reference(registry: Registry, name: str) -> str:
    """``NAME@production`` when a production version exists, else ``NAME`` (the newest)."""
    stages = {mv.stage for mv in registry.list(name)}
    return f"{name}@production" if "production" in stages else name


def _follows_production(reference: str) -> bool:
    return "@" not in reference and ":" not in reference


class ModelHost:
    """Loads the served references from a registry and keeps them current.

    Parameters
    ----------
    registry : Registry
    references : list of str, optional
        ``NAME`` (its production version when it has one, else its newest, re-resolved on every
        :meth:`refresh`), ``NAME@STAGE`` or ``NAME:VERSION``. Default: every model in the
        registry, as ``NAME``.
    """

    def __init__(self, registry: Registry, references: list[str] | None = None) -> None:
        self.registry = registry
        if references:
            self.references = {ref.split("@")[0].split(":")[0]: ref for ref in references}
        else:
            self.references = {name: name for name in registry.names()}
        if not self.references:
            raise ArtifactError(
                f"the registry at {registry.root} has no models; register one with "
                "`shardlearn train ... --register NAME`"
            )
        self._models: dict[str, ServedModel] = {}

    def load_all(self) -> None:
        """Load every served reference (raises on the first that cannot be loaded)."""
        for name, reference in self.references.items():
            self._models[name] = self._load(*self._resolve(reference))

    def _resolve(self, reference: str) -> tuple[str, ModelVersion]:
        """The reference served for ``reference`` now, and the version it names."""
        if _follows_production(reference):
            reference = _default_reference(self.registry, reference)
        return reference, self.registry.resolve(reference)

    def _load(self, reference: str, version: ModelVersion) -> ServedModel:
        artifact = self.registry.read(version.ref)
        return ServedModel(
            name=version.name,
            version=version.version,
            reference=reference,
            model_type=version.model_type,
            stage=version.stage,
            model=artifact.to_model(),
            classes=artifact.classes,
            input_schema=artifact.input_schema,
            metrics=version.metrics,
        )

    def refresh(self) -> list[str]:
        """Re-resolve every reference; returns the names now served by another version.

        A version that only changed stage (say, the served newest version was promoted to
        production) keeps its loaded model and reports the new stage and reference.
        """
        swapped = []
        for name, reference in self.references.items():
            if _PINNED.search(reference):
                continue
            try:
                effective, current = self._resolve(reference)
                served = self._models.get(name)
                if served is not None and served.version == current.version:
                    if (served.stage, served.reference) != (current.stage, effective):
                        self._models[name] = replace(
                            served, stage=current.stage, reference=effective
                        )
                    continue
                self._models[name] = self._load(effective, current)
            except Exception as error:  # noqa: BLE001 - keep serving the old version
                log.error("reload of %s failed, still serving the old version: %s", name, error)
                continue
            log.info("now serving %s version %s (%s)", name, current.version, effective)
            swapped.append(name)
        return swapped

    def get(self, name: str) -> ServedModel | None:
        """The model served as ``name``, or None."""
        return self._models.get(name)

    def served(self) -> list[ServedModel]:
        """Every loaded model, by name."""
        return [self._models[name] for name in sorted(self._models)]

    @property
    def ready(self) -> bool:
        """True once every reference is loaded."""
        return bool(self._models) and set(self._models) == set(self.references)
