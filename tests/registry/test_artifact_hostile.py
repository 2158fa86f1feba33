"""Hostile artifacts: crafted names, resource abuse and a fuzz over a saved model of each family.

An artifact folder is untrusted input. It is loaded exactly as saved or refused with one
``ArtifactError`` line; it never calls a function it names, imports a module, sets an
attribute outside the estimator's declared list, costs memory its size on disk does not
justify, or follows a link out of the folder.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import shardlearn as sl
from shardlearn.engine import engine
from shardlearn.exceptions import ArtifactError, ShardlearnError
from shardlearn.preprocess import Preprocessor
from shardlearn.registry import crypto, read_artifact
from shardlearn.registry._untrusted import MAX_JSON_DEPTH

SIGNING_KEY = "k" * 32
FAMILIES = ["linear", "forest", "xgboost", "naive_bayes", "mlp", "kmeans", "pca", "pipeline"]
# Keys of model.json that describe a model but never change what it predicts.
DESCRIPTIVE_KEYS = {
    "created_at",
    "metrics",
    "dataset_manifest_sha256",
    "training",
    "lineage",
    "library_versions",
}
# Names an attacker would try: pyarrow functions, methods, private state, modules, classes.
HOSTILE_NAMES = [
    "show_versions",
    "create_library_symlinks",
    "predict_proba",
    "predict",
    "_booster",
    "_network",
    "__class__",
    "__dict__",
    "shardlearn.cli",
    "shardlearn.testing",
    "shardlearn.serve",
    "os",
    "subprocess",
    "BaseEstimator",
    "LogisticRegression",
    "Pipeline",
    "Preprocessor",
    "float64",
    "timestamp[us, tz=../../x]",
    "classes_",
    "coef_",
    "n_features_in_",
]


# ------------------------------------------------------------------ fitted models
def _data(n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    X = np.abs(rng.normal(size=(n, 6)) + y[:, None] * 0.7)
    return X, np.asarray(["ant", "bee", "cat"])[y]


def _pipeline() -> tuple[Any, pa.Table]:
    rng = np.random.default_rng(1)
    n = 120
    table = pa.table(
        {
            "age": rng.normal(40, 9, n),
            "city": rng.choice(["oslo", "rome", "lima"], n),
            "y": rng.choice(["no", "yes"], n),
        }
    )
    pre = Preprocessor({"age": "numeric", "city": "categorical"}, label="y")
    with engine("local", workers=1):
        model = sl.Pipeline(pre, sl.LogisticRegression()).fit(table, "y")
    return model, table.drop(["y"])


def _fit(family: str) -> tuple[Any, Any]:
    if family == "pipeline":
        return _pipeline()
    X, y = _data()
    model = {
        "linear": lambda: sl.LogisticRegression(),
        "forest": lambda: sl.RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0),
        "xgboost": lambda: sl.XGBoostClassifier(n_estimators=3, max_depth=2),
        "naive_bayes": lambda: sl.GaussianNB(),
        "mlp": lambda: sl.MLPClassifier(
            hidden_layer_sizes=(4,), epochs=1, random_state=0, verbose=False
        ),
        "kmeans": lambda: sl.KMeans(3, random_state=0),
        "pca": lambda: sl.PCA(2),
    }[family]()
    with engine("local", workers=1):
        model.fit(X, y) if family not in ("kmeans", "pca") else model.fit(X)
    return model, X


def _outputs(model: Any, X: Any) -> dict[str, np.ndarray]:
    out = {}
    for method in ("predict", "predict_proba", "transform"):
        if callable(getattr(model, method, None)):
            try:
                out[method] = np.asarray(getattr(model, method)(X))
            except (AttributeError, NotImplementedError):
                pass
    assert out
    return out


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Per family: the plain and the signed artifact folder, the input and expected outputs."""
    root = tmp_path_factory.mktemp("hostile")
    out = {}
    for family in FAMILIES:
        model, X = _fit(family)
        plain = sl.save(model, root / family / "plain", sign=False, encrypt=False)
        signed = sl.save(model, root / family / "signed", sign=SIGNING_KEY, encrypt=False)
        expected = _outputs(model, X)
        # Warm up: the first load imports what a legitimate load needs (xgboost, torch, ...).
        assert _same(_outputs(read_artifact(plain).to_model(), X), expected)
        out[family] = {"plain": plain, "signed": signed, "X": X, "expected": expected}
    return out


def _copy(source: Path, workdir: Path) -> Path:
    target = workdir / "artifact"
    shutil.copytree(source, target, symlinks=True)
    return target


def _load(path: Path, signed: bool = False) -> Any:
    key = SIGNING_KEY if signed else None
    return read_artifact(path, signing_key=key).to_model()


def _header(path: Path) -> dict:
    return json.loads((path / "model.json").read_text())


def _write_header(path: Path, header: dict) -> None:
    (path / "model.json").write_text(json.dumps(header))


def _rehash(path: Path, name: str) -> None:
    """Record ``name``'s current sha256 and size in model.json (a crafted, unsigned artifact)."""
    header = _header(path)
    data = (path / name).read_bytes()
    header["files"][name] = {"sha256": crypto.sha256_bytes(data), "bytes": len(data)}
    _write_header(path, header)


def _write_arrays(path: Path, data: bytes) -> None:
    """Replace arrays.npz with ``data`` and record its hash (a crafted, unsigned artifact)."""
    (path / "arrays.npz").write_bytes(data)
    _rehash(path, "arrays.npz")


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _model_meta(header: dict) -> dict:
    return header["model"]["meta"]


# ------------------------------------------------------------------ finding 1: names from files
def test_a_dtype_name_in_model_json_calls_no_pyarrow_function(saved, tmp_path, capfd):
    path = _copy(saved["pipeline"]["plain"], tmp_path)
    header = _header(path)
    schema = _model_meta(header)["preprocessor"]["meta"]["input_schema"]
    schema["columns"][0]["dtype"] = "show_versions"
    _write_header(path, header)
    capfd.readouterr()
    with pytest.raises(ArtifactError, match="show_versions"):
        _load(path)
    assert capfd.readouterr().out == ""  # pyarrow.show_versions() prints when called


def test_an_input_schema_dtype_outside_the_table_is_refused(saved, tmp_path, capfd):
    path = _copy(saved["linear"]["plain"], tmp_path)
    header = _header(path)
    header["input_schema"]["columns"][0]["dtype"] = "show_versions"
    _write_header(path, header)
    capfd.readouterr()
    with pytest.raises(ArtifactError, match="known dtypes"):
        read_artifact(path)
    assert capfd.readouterr().out == ""


def test_an_artifact_cannot_set_a_method_as_an_attribute(saved, tmp_path):
    path = _copy(saved["linear"]["plain"], tmp_path)
    header = _header(path)
    _model_meta(header)["attributes"]["predict_proba"] = "broken"
    _write_header(path, header)
    with pytest.raises(ArtifactError, match="'predict_proba' on LogisticRegression"):
        _load(path)


def _fitted_dicts(node: Any) -> list[dict]:
    """Every dict of fitted state in hook metadata ("attributes" of models, "fitted" of
    preprocessing transformers), at any depth (pipelines, self-training)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("attributes", "fitted") and isinstance(value, dict):
                found.append(value)
            found += _fitted_dicts(value)
    elif isinstance(node, list):
        for value in node:
            found += _fitted_dicts(value)
    return found


def _parts(model: Any) -> list[Any]:
    parts = [model, getattr(model, "estimator", None), getattr(model, "preprocessor", None)]
    parts += list(getattr(model.preprocessor, "transformers_", [])) if parts[2] else []
    return [p for p in parts if p is not None]


@pytest.mark.parametrize("family", FAMILIES)
def test_no_family_sets_an_attribute_it_does_not_declare(saved, tmp_path, family):
    path = _copy(saved[family]["plain"], tmp_path)
    header = _header(path)
    fitted = _fitted_dicts(header["model"]["meta"])
    assert fitted, "the fuzz below would not reach fitted state"
    for state in fitted:
        state.update(predict_proba="broken", _booster="broken", transform="broken")
    _write_header(path, header)
    try:
        model = _load(path)
    except ArtifactError as error:
        assert any(name in str(error) for name in ("predict_proba", "_booster", "transform"))
        return
    for part in _parts(model):  # explicit hooks (torch, preprocessing) ignore unknown names
        assert not {"predict_proba", "_booster", "transform"} & set(vars(part)), family
    assert _same(_outputs(model, saved[family]["X"]), saved[family]["expected"])


@pytest.mark.parametrize("family", ["kmeans", "forest"])
def test_an_artifact_cannot_set_an_undeclared_array(saved, tmp_path, family):
    path = _copy(saved[family]["plain"], tmp_path)
    _write_arrays(path, _npz(_fit_state=np.zeros(3), **dict(np.load(path / "arrays.npz"))))
    with pytest.raises(ArtifactError, match="'_fit_state'"):
        _load(path)


def test_an_artifact_gives_only_init_parameters(saved, tmp_path):
    path = _copy(saved["naive_bayes"]["plain"], tmp_path)
    header = _header(path)
    _model_meta(header)["params"]["priorz"] = [0.5, 0.5]
    _write_header(path, header)
    with pytest.raises(ArtifactError, match="unknown parameter 'priorz'"):
        _load(path)


def test_the_recorded_module_is_never_imported(saved, tmp_path):
    path = _copy(saved["linear"]["plain"], tmp_path)
    header = _header(path)
    header["model"]["module"] = "shardlearn.cli"  # the top layer: nothing may import it
    _write_header(path, header)
    script = (
        "import sys; from shardlearn.registry import read_artifact; "
        f"read_artifact({str(path)!r}).to_model(); print('shardlearn.cli' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_a_network_architecture_that_does_not_fit_its_weights_is_refused_at_load(saved, tmp_path):
    from shardlearn.models.neural_network._torch import load_weights, save_weights

    path = _copy(saved["mlp"]["plain"], tmp_path)
    header = _header(path)
    architecture = _model_meta(header)["architecture"]
    architecture["hidden"] = [10**7, 10**7]  # a 10^14-weight layer: 400 TB if ever built
    _write_header(path, header)
    weights = path / "files" / "weights.safetensors"
    tensors, metadata = load_weights(weights.read_bytes())
    weights.write_bytes(save_weights(tensors, {**metadata, "architecture": architecture}))
    _rehash(path, "files/weights.safetensors")
    with pytest.raises(ArtifactError, match="does not hold the weights of the architecture"):
        _load(path)


@pytest.mark.parametrize("child", ["cycle", "out_of_range"])
def test_forest_node_arrays_that_cannot_be_walked_safely_are_refused(saved, tmp_path, child):
    path = _copy(saved["forest"]["plain"], tmp_path)
    arrays = dict(np.load(path / "arrays.npz"))
    left = arrays["children_left_"]
    root_child = int(left[0])
    left[root_child if child == "cycle" else 0] = 0 if child == "cycle" else len(left) + 5
    _write_arrays(path, _npz(**arrays))
    with pytest.raises(ArtifactError, match="RandomForestClassifier artifact: a child"):
        _load(path)


def test_a_type_outside_the_model_catalogue_is_refused(saved, tmp_path):
    path = _copy(saved["linear"]["plain"], tmp_path)
    header = _header(path)
    header["model"]["type"] = "BaseEstimator"
    _write_header(path, header)
    with pytest.raises(ArtifactError, match="unknown model type 'BaseEstimator'"):
        _load(path)


def test_every_family_declares_exactly_the_attributes_it_saves(saved):
    from shardlearn.models._base import declared_fitted

    for family in FAMILIES:
        model = _load(saved[family]["plain"])
        estimator = getattr(model, "estimator", model)
        if hasattr(type(estimator), "_fitted_attributes"):
            public = {k for k in vars(estimator) if k.endswith("_") and not k.startswith("_")}
            assert public <= declared_fitted(type(estimator)), family


# ------------------------------------------------------------------ finding 9: resource abuse
def _npz_with(member: str, data: bytes, compress: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compress) as archive:
        archive.writestr(member, data)
    return buffer.getvalue()


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def test_a_deflate_bomb_in_arrays_npz_is_refused_before_inflating(saved, tmp_path):
    path = _copy(saved["linear"]["plain"], tmp_path)
    coef = np.load(path / "arrays.npz")["coef_"]
    bomb = np.zeros((coef.shape[0], 4_000_000))  # 96 MB of zeros, ~100 KB deflated
    _write_arrays(path, _npz_with("coef_.npy", _npy(bomb), zipfile.ZIP_DEFLATED))
    assert (path / "arrays.npz").stat().st_size < 200_000
    with pytest.raises(ArtifactError, match=r"inflates .* \(more than 20:1\)"):
        _load(path)


def test_an_npy_header_claiming_a_huge_shape_is_refused(saved, tmp_path):
    path = _copy(saved["linear"]["plain"], tmp_path)
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**12,)}
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, header)
    npy.write(b"\0" * 64)
    _write_arrays(path, _npz_with("coef_.npy", npy.getvalue(), zipfile.ZIP_STORED))
    with pytest.raises(ArtifactError, match=r"declares shape \(1000000000000,\)"):
        _load(path)


def test_an_object_array_is_refused(saved, tmp_path):
    path = _copy(saved["linear"]["plain"], tmp_path)
    npy = _npy(np.asarray([{"a": 1}], dtype=object), allow_pickle=True)
    _write_arrays(path, _npz_with("coef_.npy", npy, zipfile.ZIP_STORED))
    with pytest.raises(ArtifactError, match="dtype object"):
        _load(path)


def test_deeply_nested_json_is_an_artifact_error(saved, tmp_path):
    path = _copy(saved["linear"]["plain"], tmp_path)
    text = (path / "model.json").read_text()
    deep = "[" * 100_000 + "]" * 100_000
    (path / "model.json").write_text(text.replace('"metrics": null', f'"metrics": {deep}', 1))
    with pytest.raises(ArtifactError, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
        _load(path)


def test_a_symlink_inside_the_artifact_is_refused(saved, tmp_path):
    path = _copy(saved["linear"]["plain"], tmp_path)
    outside = tmp_path / "elsewhere.npz"
    (path / "arrays.npz").rename(outside)
    (path / "arrays.npz").symlink_to(outside)  # same bytes, so the sha256 still matches
    with pytest.raises(ArtifactError, match="arrays.npz is a symbolic link"):
        _load(path)


def test_a_symlinked_folder_cannot_hide_unlisted_files(saved, tmp_path):
    path = _copy(saved["xgboost"]["plain"], tmp_path)
    hidden = tmp_path / "hidden"
    (path / "files").rename(hidden)
    (hidden / "extra.bin").write_bytes(b"unlisted")
    (path / "files").symlink_to(hidden, target_is_directory=True)
    with pytest.raises(ArtifactError, match="files is a symbolic link"):
        _load(path)


def test_a_listed_size_that_does_not_match_is_refused_before_reading(saved, tmp_path):
    path = _copy(saved["linear"]["plain"], tmp_path)
    header = _header(path)
    header["files"]["arrays.npz"]["bytes"] += 1
    _write_header(path, header)
    with pytest.raises(ArtifactError, match="lists"):
        _load(path)


# ------------------------------------------------------------------ the fuzz
def _json_values() -> st.SearchStrategy:
    leaves = (
        st.none()
        | st.booleans()
        | st.integers(-(2**70), 2**70)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.sampled_from(HOSTILE_NAMES)
        | st.text(max_size=12)
    )
    keys = st.sampled_from(HOSTILE_NAMES) | st.text(max_size=8)
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
        max_leaves=6,
    )


_MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 9), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 9), st.floats(0, 1), st.just(0)),
    st.tuples(st.just("npz"), st.just(0), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(
        st.just("json"),
        st.lists(st.integers(0, 1000), max_size=8),
        st.sampled_from(["replace", "add", "delete"]),
        st.tuples(st.sampled_from(HOSTILE_NAMES), _json_values()),
    ),
)


def _walk(header: dict, steps: list[int]) -> tuple[Any, Any, list]:
    """(container, key, key path) of the node the steps lead to."""
    parent: Any = {"root": header}
    key: Any = "root"
    keys: list = []
    for step in steps:
        node = parent[key]
        if not isinstance(node, dict | list) or not node:
            break
        child = sorted(node)[step % len(node)] if isinstance(node, dict) else step % len(node)
        parent, key = node, child
        keys.append(child)
    return parent, key, keys


def _change(document: Any, steps: list[int], how: str, change: tuple) -> list:
    """In ``document``, the node ``steps`` lead to: add ``change`` (name, value) to it (a dict),
    delete it, or replace it by the value; the keys walked to it (none: the root, unchanged)."""
    parent, key, keys = _walk(document, steps)
    name, value = change
    node = parent[key]
    if how == "add" and isinstance(node, dict):
        node[name] = value
    elif how == "delete" and keys:
        del parent[key]
    elif keys:
        parent[key] = value
    return keys


def _mutate_json(path: Path, steps: list[int], how: str, change: tuple) -> bool:
    """Mutate model.json; whether the change touched only descriptive metadata."""
    header = _header(path)
    keys = _change(header, steps, how, change)
    _write_header(path, header)
    return bool(keys) and keys[0] in DESCRIPTIVE_KEYS


def _mutate_bytes(path: Path, mutation: tuple) -> bool:
    """Flip or truncate a file; whether it was a payload file under a sha256 in model.json."""
    kind, index, where, xor = mutation
    files = sorted(p for p in path.rglob("*") if p.is_file())
    if kind == "npz":
        target = path / "arrays.npz"
    else:
        target = files[index % len(files)]
    data = bytearray(target.read_bytes())
    position = min(int(where * len(data)), max(len(data) - 1, 0))
    if kind == "truncate":
        del data[position:]
    elif data:
        data[position] ^= xor
    target.write_bytes(bytes(data))
    if kind == "npz":
        _rehash(path, "arrays.npz")  # crafted: the npz parser itself must hold
    return kind != "npz" and target.name not in ("model.json", "signature")


def _watched() -> set[str]:
    """Files of the pyarrow package and the working directory (nothing may be created there)."""
    roots = [Path(pa.__file__).parent, Path.cwd()]
    return {str(p) for root in roots for p in root.iterdir()}


@pytest.mark.parametrize("family", FAMILIES)
@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutation=_MUTATIONS, signed=st.booleans())
def test_a_mutated_artifact_loads_identically_or_raises_artifact_error(
    saved, family, mutation, signed
):
    case = saved[family]
    files_before, modules_before = _watched(), set(sys.modules)
    with tempfile.TemporaryDirectory(prefix="shardlearn-fuzz-") as workdir:
        path = _copy(case["signed" if signed else "plain"], Path(workdir))
        if mutation[0] == "json":
            harmless = _mutate_json(path, *mutation[1:])
        else:
            harmless = _mutate_bytes(path, mutation)
        siblings = set(os.listdir(workdir))
        try:
            model = _load(path, signed)
        except ArtifactError as error:
            assert "\n" not in str(error)
            model = None
        event(f"{mutation[0]}: {'refused' if model is None else 'loaded'}")
        assert set(os.listdir(workdir)) == siblings
    assert _watched() == files_before
    new_modules = {m for m in set(sys.modules) - modules_before if not m.startswith("encodings.")}
    assert not new_modules, f"a load imported {sorted(new_modules)}"
    if model is None:
        return
    assert type(model) is type(_load(case["plain"]))
    # A signed artifact, a flipped or truncated payload file and a change of descriptive
    # metadata cannot change predictions; an unsigned model.json edited elsewhere (a class
    # label, a parameter) or a re-hashed npz is a different model, legitimately -- which still
    # predicts, or refuses with one of shardlearn's errors.
    if signed or harmless:
        assert _same(_outputs(model, case["X"]), case["expected"])
    else:
        try:
            _outputs(model, case["X"])
        except ShardlearnError:
            pass


# ------------------------------------------------------------------ the XGBoost booster file
_BOOSTER = "files/booster.ubj"
_BOOSTER_MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(0)),
    st.tuples(
        st.just("json"),
        st.lists(st.integers(0, 1000), max_size=10),
        st.sampled_from(["replace", "add", "delete"]),
        st.tuples(st.sampled_from(HOSTILE_NAMES), _json_values()),
    ),
)


def _mutate_booster(path: Path, mutation: tuple) -> None:
    """Flip or truncate the booster's UBJSON, or rewrite it as mutated XGBoost JSON; rehash.

    Re-hashed like the npz mutation: a crafted, unsigned artifact, so XGBoost's own parser
    and shardlearn's checks of what it loaded are what must hold.
    """
    import xgboost as xgb

    target = path / _BOOSTER
    if mutation[0] == "json":
        booster = xgb.Booster(model_file=bytearray(target.read_bytes()))
        document = json.loads(bytes(booster.save_raw("json")))
        _, steps, how, change = mutation
        _change(document, steps, how, change)
        target.write_bytes(json.dumps(document).encode())
    else:
        kind, where, xor = mutation
        data = bytearray(target.read_bytes())
        position = min(int(where * len(data)), len(data) - 1)
        if kind == "truncate":
            del data[position:]
        else:
            data[position] ^= xor
        target.write_bytes(bytes(data))
    _rehash(path, _BOOSTER)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutation=_BOOSTER_MUTATIONS)
def test_a_crafted_booster_file_loads_and_predicts_or_raises_artifact_error(saved, mutation):
    # The booster file is XGBoost's own format, parsed by XGBoost: whatever it holds, loading
    # the artifact gives a model that predicts (a changed split is a different model,
    # legitimately) or one ArtifactError line -- never an XGBoostError, a shape error at
    # predict time, or anything else.
    case = saved["xgboost"]
    with tempfile.TemporaryDirectory(prefix="shardlearn-fuzz-") as workdir:
        path = _copy(case["plain"], Path(workdir))
        _mutate_booster(path, mutation)
        try:
            model = _load(path)
        except ArtifactError as error:
            assert "\n" not in str(error)
            event(f"{mutation[0]}: refused")
            return
    event(f"{mutation[0]}: loaded")
    outputs = _outputs(model, case["X"])
    assert outputs["predict_proba"].shape == case["expected"]["predict_proba"].shape
    assert set(outputs["predict"]) <= set(case["expected"]["predict"])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("left_children", 10**6, "outside its"),
        ("left_children", 0, "not after its parent"),
        ("split_indices", 99, "splits on a feature outside"),
        ("parents", 5, "parents do not match"),
    ],
)
def test_a_booster_tree_that_cannot_be_walked_safely_is_refused(
    saved, tmp_path, field, value, message
):
    import xgboost as xgb

    path = _copy(saved["xgboost"]["plain"], tmp_path)
    target = path / _BOOSTER
    document = json.loads(
        bytes(xgb.Booster(model_file=bytearray(target.read_bytes())).save_raw("json"))
    )
    tree = document["learner"]["gradient_booster"]["model"]["trees"][0]
    tree[field][1 if field == "parents" else 0] = value
    target.write_bytes(json.dumps(document).encode())
    _rehash(path, _BOOSTER)
    with pytest.raises(ArtifactError, match=message):
        _load(path)
