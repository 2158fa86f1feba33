"""``shardlearn models ...`` (the registry) and ``shardlearn predict`` (batch prediction).

``models list`` and ``models show`` name a Pipeline by its steps, e.g.
``Pipeline(PCA, LogisticRegression)``: ``list`` reads them from the parameters the registry
index records (no artifact is opened), ``show`` from the artifact itself.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from shardlearn.cli._common import (
    AllowUnencryptedOption,
    AllowUnsignedOption,
    console,
    fail,
    labelled,
    print_table,
)
from shardlearn.cli._options import model_options
from shardlearn.data.options import FileReadOptions

_REGISTRY_HELP = "Model registry: a directory or an s3:// URI (env SHARDLEARN_MODELS)."

models_app = typer.Typer(
    help=(
        "Registered models: list, show, promote, verify, delete, export.\n\n"
        "Example:\n\n"
        "  shardlearn models list\n\n"
        "  shardlearn models promote loans 3 production"
    ),
    no_args_is_help=True,
)


def _registry_option() -> Any:
    return typer.Option("models", "--registry", envvar="SHARDLEARN_MODELS", help=_REGISTRY_HELP)


def _print_json(value: Any) -> None:
    console.print_json(json.dumps(value, default=str))


def _metric_text(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return ""
    shown = [
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in metrics.items()
        if isinstance(v, int | float | str)
    ]
    return ", ".join(shown[:4])


# A step list longer than this is not parsed (the index is untrusted input).
_MAX_STEPS_TEXT = 2000


def _step_names(recorded: Any) -> list[str]:
    """Class names of the middle steps recorded as ``repr`` of a tuple, ``"(PCA(...),)"``.

    Parsed with :func:`ast.parse` (never evaluated); anything else gives no names.
    """
    if not isinstance(recorded, str) or len(recorded) > _MAX_STEPS_TEXT:
        return []
    try:
        tree = ast.parse(recorded, mode="eval").body
    except SyntaxError:
        return []
    calls = tree.elts if isinstance(tree, ast.Tuple | ast.List) else [tree]
    return [
        call.func.id
        for call in calls
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
    ]


def _type_text(model_type: str, params: Any) -> str:
    """``Pipeline(PCA, LogisticRegression)`` for a Pipeline whose params name its steps."""
    if model_type != "Pipeline" or not isinstance(params, dict):
        return model_type
    final = params.get("estimator")
    if not isinstance(final, str):
        return model_type
    return f"Pipeline({', '.join([*_step_names(params.get('transformers')), final])})"


def _pipeline_steps(artifact: Any) -> str:
    """The artifact's type with its steps, e.g. ``Pipeline(PCA, LogisticRegression)``."""
    model = artifact.meta.get("model") or {}
    meta = model.get("meta") or {}
    if artifact.model_type != "Pipeline" or not isinstance(meta.get("estimator"), dict):
        return artifact.model_type
    steps = [*(meta.get("transformers") or []), meta["estimator"]]
    names = [str(step.get("type")) for step in steps if isinstance(step, dict)]
    return f"Pipeline({', '.join(names)})"


@models_app.command("list")
def list_models(
    name: str | None = typer.Argument(None, help="Only this model's versions."),
    registry: str = _registry_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List registered versions.

    Example: shardlearn models list loans --registry models
    """
    from shardlearn.registry import Registry

    versions = Registry(registry).list(name)
    if as_json:
        _print_json([mv.to_dict() for mv in versions])
        return
    if not versions:
        console.print(
            f"No models in {registry}. Register one with `shardlearn train ... --register NAME`.",
            markup=False,
        )
        return
    show_flags = any(mv.signed or mv.encrypted for mv in versions)
    table = Table("name", "ver", "stage", "type", "created (UTC)", "metrics")
    if show_flags:
        table.add_column("integrity")
    for mv in versions:
        row = [
            mv.name, str(mv.version), mv.stage or "",
            _type_text(mv.model_type, (mv.lineage or {}).get("params")),
            mv.created_at[:16].replace("T", " "), _metric_text(mv.metrics),
        ]  # fmt: skip
        if show_flags:
            row.append(
                "+".join(f for f, on in (("signed", mv.signed), ("enc", mv.encrypted)) if on)
            )
        table.add_row(*row)
    print_table(table)


def _read(ref: str, registry: str) -> tuple[Any, Any]:
    """(ModelVersion or None, Artifact) for a registry reference or an artifact path."""
    from shardlearn.registry import Registry, is_artifact, read_verified

    if is_artifact(ref):
        return None, read_verified(ref)
    reg = Registry(registry)
    return reg.resolve(ref), reg.read(ref)


@models_app.command("show")
def show(
    ref: str = typer.Argument(..., help="NAME, NAME:VERSION, NAME@STAGE or an artifact path."),
    registry: str = _registry_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show one version: type, classes, inputs, metrics, lineage, integrity.

    Example: shardlearn models show loans@production
    """
    mv, artifact = _read(ref, registry)
    info = {
        **(mv.to_dict() if mv else {"path": str(artifact.path)}),
        "model": _pipeline_steps(artifact),
        "model_type": artifact.model_type,
        "classes": artifact.classes,
        "input_columns": [c["name"] for c in (artifact.input_schema or {}).get("columns", [])],
        "metrics": artifact.meta.get("metrics"),
        "dataset_manifest_sha256": artifact.meta.get("dataset_manifest_sha256"),
        "training": artifact.meta.get("training"),
        "library_versions": artifact.meta.get("library_versions"),
        "created_at": artifact.header.get("created_at"),
        "signed": artifact.signed,
        "signature_verified": artifact.signature_verified,
        "encrypted": artifact.encrypted,
        "files": artifact.header.get("files"),
    }
    importances = _top_importances(artifact)
    if as_json:
        _print_json({**info, "feature_importances": importances})
        return
    table = Table("field", "value", show_header=False)
    for key, value in info.items():
        if key in ("lineage", "files", "library_versions") and isinstance(value, dict):
            value = json.dumps(value, default=str)
        table.add_row(key, "" if value is None else str(value))
    print_table(table)
    if importances:
        ranked = Table("feature", "gain", "splits", title=f"top {len(importances)} features")
        for row in importances:
            ranked.add_row(row["feature"], f"{row['gain']:.4f}", f"{row['splits']:.0f}")
        print_table(ranked)


def _top_importances(artifact: Any, top: int = 15) -> list[dict[str, Any]] | None:
    """The tree model's features ranked by gain (None for models without importances)."""
    model = artifact.to_model()
    if not hasattr(model, "importances"):  # a Pipeline has it when its final step has
        return None
    scores = model.importances()
    ranked = sorted(scores["gain"], key=lambda name: -scores["gain"][name])[:top]
    return [
        {"feature": name, "gain": scores["gain"][name], "splits": scores["split"][name]}
        for name in ranked
    ]


@models_app.command("promote")
def promote(
    name: str = typer.Argument(..., help="Model name."),
    version: int = typer.Argument(..., help="Version number."),
    stage: str = typer.Argument(..., help="staging, production or archived."),
    registry: str = _registry_option(),
    keep_production: bool = typer.Option(
        False, help="Do not archive the current production version."
    ),
) -> None:
    """Move a version to a stage; a new production version archives the previous one.

    Example: shardlearn models promote loans 3 production
    """
    from shardlearn.registry import Registry

    mv = Registry(registry).promote(name, version, stage, archive_existing=not keep_production)
    console.print(f"{mv.ref} is now in {mv.stage}", markup=False)


@models_app.command("verify")
def verify(
    ref: str | None = typer.Argument(None, help="A version or artifact path. Default: all."),
    registry: str = _registry_option(),
) -> None:
    """Check signatures and file hashes (exit 1 if any artifact fails).

    Example: SHARDLEARN_SIGNING_KEY=... shardlearn models verify
    """
    from shardlearn.registry import Registry, is_artifact, read_verified

    if ref is not None and is_artifact(ref):
        artifact = read_verified(ref)
        state = "signature ok" if artifact.signature_verified else "hashes ok (not signed)"
        console.print(f"{ref}: {state}", markup=False, soft_wrap=True)
        return
    results = Registry(registry).verify(ref)
    failures = 0
    for mv, error in results:
        if error is None:
            state = "signature ok" if mv.signed else "hashes ok (unsigned)"
            console.print(labelled("ok  ", "green", f"{mv.ref}  {state}"), highlight=False)
        else:
            failures += 1
            console.print(labelled("FAIL", "red", f"{mv.ref}  {error}"), highlight=False)
    if failures:
        raise fail(f"{failures} of {len(results)} artifacts failed verification")
    console.print(f"{len(results)} artifacts verified", markup=False)


@models_app.command("delete")
def delete(
    name: str = typer.Argument(..., help="Model name."),
    version: int | None = typer.Argument(None, help="Version. Default: every version."),
    registry: str = _registry_option(),
    force: bool = typer.Option(False, "--force", help="Also delete a production version."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete a version (or every version of a model).

    Example: shardlearn models delete loans 2 --yes
    """
    from shardlearn.registry import Registry

    what = f"{name}:{version}" if version is not None else f"every version of {name}"
    if not yes and not typer.confirm(f"Delete {what}?"):
        raise typer.Exit(1)
    deleted = Registry(registry).delete(name, version, force=force)
    console.print(f"Deleted {name} version(s) {', '.join(map(str, deleted))}", markup=False)


@models_app.command("register")
def register_artifact(
    path: Path = typer.Argument(..., help="An artifact directory (from shardlearn.save)."),
    name: str = typer.Argument(..., help="Model name."),
    registry: str = _registry_option(),
    stage: str | None = typer.Option(None, help="Promote the new version to this stage."),
) -> None:
    """Copy a saved artifact into the registry as the next version of NAME.

    Example: shardlearn models register out/model loans --stage staging
    """
    from shardlearn.registry import Registry

    mv = Registry(registry).add_artifact(path, name, stage=stage)
    console.print(f"Registered {mv.ref}" + (f" ({mv.stage})" if mv.stage else ""), markup=False)


@models_app.command("export")
def export(
    ref: str = typer.Argument(..., help="NAME, NAME:VERSION, NAME@STAGE or an artifact path."),
    out: Path = typer.Option(
        ..., "--out", help="Output file (.onnx) or directory (artifact, mlflow)."
    ),
    format: str = typer.Option("onnx", "--format", help="onnx, artifact or mlflow."),
    registry: str = _registry_option(),
    estimator_only: bool = typer.Option(
        False, help="For a Pipeline: export only the classifier (input = preprocessed features)."
    ),
) -> None:
    """Export a model: ONNX (linear models, naive Bayes), an MLflow model (pyfunc flavour,
    any model; needs shardlearn[mlflow]) or a copy of the artifact.

    Example: shardlearn models export loans@production --format onnx --out loans.onnx

    Example: shardlearn models export loans:3 --format mlflow --out loans-mlflow
    """
    if format not in ("onnx", "artifact", "mlflow"):
        raise fail(f"unknown export format {format!r}: choose onnx, artifact or mlflow")
    if estimator_only and format != "onnx":
        raise fail("--estimator-only applies to --format onnx only")
    _, artifact = _read(ref, registry)
    if format == "artifact":
        if out.exists():
            raise fail(f"{out} already exists")
        shutil.copytree(artifact.path, out)
        console.print(f"Copied {artifact.path} to {out}", markup=False, soft_wrap=True)
        return
    if format == "mlflow":
        from shardlearn.registry.mlflow import export_mlflow

        export_mlflow(artifact, out)
        console.print(f"Wrote MLflow model {out}", markup=False, soft_wrap=True)
        return
    from shardlearn.registry.onnx import export_onnx

    export_onnx(artifact.to_model(), out, estimator_only=estimator_only)
    console.print(f"Wrote {out}", markup=False, soft_wrap=True)


@models_app.command("keygen")
def keygen(
    ed25519: bool = typer.Option(
        False, "--ed25519", help="Write an Ed25519 key pair instead of printing a shared key."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="With --ed25519: write OUT.key (private, mode 0600) and OUT.pub."
    ),
) -> None:
    """Print a new random 256-bit key (for SHARDLEARN_SIGNING_KEY / SHARDLEARN_ENCRYPTION_KEY),
    or with --ed25519 write a key pair: register signs with the private key
    (SHARDLEARN_SIGNING_PRIVATE_KEY_FILE), predict/serve/load verify with the public key
    alone (SHARDLEARN_SIGNING_PUBLIC_KEY_FILE).

    Example: shardlearn models keygen > signing.key

    Example: shardlearn models keygen --ed25519 --out keys/signing
    """
    from shardlearn.registry import crypto, generate_key

    if not ed25519:
        if out is not None:
            raise fail("--out is for --ed25519 key pairs; a shared key is printed to stdout")
        typer.echo(generate_key())
        return
    prefix = out if out is not None else Path("signing")
    private_path, public_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for path in (private_path, public_path):
        if path.exists():
            raise fail(f"{path} already exists; refusing to overwrite a key")
    private_pem, public_pem = crypto.generate_ed25519_keypair()
    _write_private(private_path, private_pem)
    public_path.write_bytes(public_pem)
    console.print(
        f"Wrote {private_path} (private, signs: {crypto.PRIVATE_KEY_FILE_ENV}) and "
        f"{public_path} (public, verifies: {crypto.PUBLIC_KEY_FILE_ENV})",
        highlight=False,
        markup=False,
    )


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` readable by its owner only (0600) before any secret byte is written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)  # whatever the umask
        handle.write(data)


def _names(value: str | None) -> list[str]:
    """A comma-separated list of names (empty parts dropped)."""
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def predict(
    model: str = typer.Argument(..., help="NAME@STAGE, NAME:VERSION, REGISTRY/NAME or a path."),
    source: list[str] = typer.Argument(
        ...,
        help="A dataset directory, or files, globs, URIs or Parquet folders as ingest takes "
        "them (csv, tsv, jsonl, parquet; .data/.test/.txt are csv; .gz/.zst/.bz2).",
    ),
    out: Path = typer.Option(..., "--out", help="Output Parquet file."),
    registry: str = _registry_option(),
    proba: bool = typer.Option(False, "--proba", help="Add one proba_<class> column per class."),
    id_column: str | None = typer.Option(
        None,
        "--id",
        help="Input column that keys the output rows (default: shard,row for a dataset; "
        "source,line for files).",
    ),
    keep_columns: str | None = typer.Option(
        None, "--keep-columns", help="Input columns copied to the output, comma-separated."
    ),
    split: list[str] = typer.Option([], "--split", help="Dataset splits to predict. Default: all."),
    engine: str | None = typer.Option(None, "--engine", help="local, ray or ray:ADDRESS."),
    workers: int | None = typer.Option(None, "--workers", help="Number of workers."),
    batch_size: int = typer.Option(65536, min=1, help="Rows per batch."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    allow_unsigned: AllowUnsignedOption = False,
    allow_unencrypted: AllowUnencryptedOption = False,
    **reading: Any,
) -> None:
    """Predict every row of a dataset or of raw files into a Parquet file.

    Raw files are read as ingest reads them; a line that cannot be read or validated is a
    reject in OUT.rejects.parquet (source, line, reason, raw) and the exit code stays 0.

    Example: shardlearn predict loans@production new.csv --out preds.parquet --proba --id id

    Example: shardlearn predict adult@production adult.test --out p.parquet --keep-columns age
    """
    from shardlearn.engine import engine as use_engine
    from shardlearn.engine import engine_from_cli
    from shardlearn.registry import Registry, is_artifact, load
    from shardlearn.registry.predict import predict_batch

    policy: dict[str, Any] = {
        "allow_unsigned": allow_unsigned,
        "allow_unencrypted": allow_unencrypted,
    }
    if is_artifact(model) or "/" in model:
        fitted = load(model, **policy)
    else:
        fitted = Registry(registry).load(model, **policy)
    inputs: Any = source[0] if len(source) == 1 else source
    with use_engine(engine_from_cli(engine, workers)) as eng:
        summary = predict_batch(
            fitted, inputs, out, proba=proba, id_column=id_column,
            keep_columns=_names(keep_columns), splits=split or None, engine=eng,
            batch_size=batch_size, verbose=not as_json, **reading,
        )  # fmt: skip
    if as_json:
        _print_json(summary.to_dict())
        return
    _print_predict_summary(summary)


def _print_predict_summary(summary: Any) -> None:
    """rows_in = predicted + rejected, and where the rejects are with their first reasons."""
    blank = f" ({summary.blank_lines} blank lines skipped)" if summary.blank_lines else ""
    console.print(
        f"rows_in={summary.rows_in} = rows_predicted={summary.rows_predicted} + "
        f"rows_rejected={summary.rows_rejected} -> {summary.out}{blank}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    if summary.rejects is None:
        return
    import pyarrow.parquet as pq

    console.print(
        f"{summary.rows_rejected} rows rejected, with file, line and reason in {summary.rejects}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    first = next(pq.ParquetFile(summary.rejects).iter_batches(batch_size=3)).to_pylist()
    for reject in first:
        console.print(
            f"  {reject['source']}:{reject['line']}: {reject['reason']}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    """Add ``models ...`` and ``predict`` to ``app``."""
    app.add_typer(models_app, name="models")
    # The reader options (--format, --delimiter, ...) are ingest's: FileReadOptions' fields.
    app.command("predict")(model_options(FileReadOptions)(predict))
