"""Neural networks: DDP and pipeline parallelism equal single-process torch; CNN on digits."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from shardlearn.engine import engine  # noqa: E402
from shardlearn.exceptions import ArtifactError, DataError, EngineError  # noqa: E402
from shardlearn.models.neural_network._neural import ConvNetClassifier, MLPClassifier  # noqa: E402
from shardlearn.models.neural_network._torch import dropout_mask, epoch_permutation  # noqa: E402

N_ROWS, N_FEATURES, N_CLASSES, BATCH = 240, 8, 3, 32
HIDDEN = (16, 8, 12)  # four weighted layers: enough for three pipeline stages


@pytest.fixture(scope="module")
def tabular() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=N_ROWS,
        n_features=N_FEATURES,
        n_informative=5,
        n_classes=N_CLASSES,
        random_state=0,
    )
    return X.astype(np.float32), y


def reference_weights(X, y, *, optimizer, lr, epochs, seed, hidden=HIDDEN, dropout=None) -> dict:
    """Plain single-process torch: same initial weights, same global batches, mean loss.

    The data order is the library's documented one: epoch ``e`` visits the rows (for array
    input, in their original order) in the order of ``epoch_permutation(seed, e, n)``, in
    consecutive global batches of ``batch_size`` rows. With dropout, row ``r`` of hidden layer
    ``k`` is multiplied by the documented mask ``dropout_mask(seed, e, k, r, width, p)``.
    """
    torch.manual_seed(seed)
    sizes = [X.shape[1], *hidden]
    layers: list = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.Tanh()]
        if dropout is not None:
            layers.append(torch.nn.Identity())  # where the mask goes; keeps the weight names
    net = torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-1], N_CLASSES))
    if optimizer == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    else:
        opt = torch.optim.Adam(net.parameters(), lr=lr)
    for epoch in range(epochs):
        order = epoch_permutation(seed, epoch, X.shape[0])
        for start in range(0, X.shape[0], BATCH):
            rows = order[start : start + BATCH]
            opt.zero_grad()
            activation, layer = torch.from_numpy(X[rows]), 0
            for module in net:
                if isinstance(module, torch.nn.Identity):
                    width = activation.shape[1]
                    mask = dropout_mask(seed, epoch, layer, rows, width, dropout)
                    activation, layer = activation * torch.from_numpy(mask), layer + 1
                else:
                    activation = module(activation)
            torch.nn.functional.cross_entropy(activation, torch.from_numpy(y[rows])).backward()
            opt.step()
    return {name: t.detach().numpy() for name, t in net.state_dict().items()}


def _mlp(**params) -> MLPClassifier:
    defaults = dict(
        hidden_layer_sizes=HIDDEN,
        activation="tanh",
        batch_size=BATCH,
        epochs=1,
        random_state=7,
        early_stopping=False,
        verbose=False,
        # The distributed path under test, never the cost model's in-process choice.
        execution="workers",
    )
    return MLPClassifier(**{**defaults, **params})


def _max_difference(model: MLPClassifier, reference: dict) -> float:
    assert sorted(model.state_dict_) == sorted(reference)
    return max(float(np.abs(model.state_dict_[k] - reference[k]).max()) for k in reference)


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.1), ("adam", 0.01)])
def test_single_process_fit_equals_plain_torch(tabular, optimizer, lr):
    X, y = tabular
    reference = reference_weights(X, y, optimizer=optimizer, lr=lr, epochs=2, seed=7)
    with engine("local", workers=1):
        model = _mlp(optimizer=optimizer, learning_rate=lr, epochs=2).fit(X, y)
    assert _max_difference(model, reference) < 1e-5


def test_ddp_two_workers_equals_single_process_after_one_epoch(tabular, engine_name):
    X, y = tabular
    with engine(engine_name, workers=2):
        for optimizer, lr in [("sgd", 0.1), ("adam", 0.01)]:
            reference = reference_weights(X, y, optimizer=optimizer, lr=lr, epochs=1, seed=7)
            model = _mlp(optimizer=optimizer, learning_rate=lr).fit(X, y)
            assert _max_difference(model, reference) < 1e-5, optimizer
            # The weights really moved: the comparison is not between two initialisations.
            initial = reference_weights(X, y, optimizer=optimizer, lr=0.0, epochs=0, seed=7)
            assert _max_difference(model, initial) > 1e-3


def test_pipeline_two_and_three_stages_equal_single_process(tabular, engine_name):
    X, y = tabular
    epochs = 2  # 2 x ceil(240 / 32) = 16 optimiser steps
    reference = reference_weights(X, y, optimizer="adam", lr=0.01, epochs=epochs, seed=7)
    with engine(engine_name, workers=3):
        for stages in (2, 3):  # with 2 stages the third worker only feeds its rows
            model = _mlp(
                parallelism="pipeline",
                stages=stages,
                micro_batches=3,
                learning_rate=0.01,
                epochs=epochs,
            ).fit(X, y)
            assert _max_difference(model, reference) < 1e-5, stages
            assert model.n_iter_ == epochs


DROPOUT = 0.3
# Float32 rounding: the ranks' gradients are summed in another order than one process sums
# the rows' (measured: about 2e-7 on these weights and probabilities).
INVARIANCE_TOLERANCE = 1e-5


def test_dropout_mlp_is_the_same_for_1_2_and_4_workers(tabular):
    X, y = tabular
    probabilities = {}
    for workers in (1, 2, 4):
        with engine("local", workers=workers):
            model = _mlp(dropout=DROPOUT, learning_rate=0.01, epochs=2).fit(X, y)
        probabilities[workers] = model.predict_proba(X)
    for workers in (2, 4):
        difference = np.abs(probabilities[workers] - probabilities[1]).max()
        assert difference < INVARIANCE_TOLERANCE, workers


def test_dropout_fit_equals_plain_torch_with_the_same_masks(tabular):
    X, y = tabular
    reference = reference_weights(X, y, optimizer="adam", lr=0.01, epochs=2, seed=7, dropout=0.3)
    without = reference_weights(X, y, optimizer="adam", lr=0.01, epochs=2, seed=7, dropout=0.0)
    with engine("local", workers=2):
        for mode in ({}, {"parallelism": "pipeline", "stages": 2, "micro_batches": 3}):
            model = _mlp(dropout=DROPOUT, learning_rate=0.01, epochs=2, **mode).fit(X, y)
            assert _max_difference(model, reference) < INVARIANCE_TOLERANCE, mode
    # The masks really dropped units: training without them ends elsewhere.
    assert _max_difference(model, without) > 1e-2


def test_dropout_mask_depends_only_on_the_row_and_drops_the_requested_share():
    rows = np.arange(2000)
    mask = dropout_mask(7, 3, 1, rows, 50, DROPOUT)
    assert set(np.unique(mask)) == {0.0, np.float32(1 / (1 - DROPOUT))}
    assert abs(np.mean(mask == 0) - DROPOUT) < 0.01
    # Any subset of rows, in any order (another worker, batch or micro-batch): same masks.
    picked = np.array([1999, 5, 800])
    np.testing.assert_array_equal(dropout_mask(7, 3, 1, picked, 50, DROPOUT), mask[picked])
    for other in [(8, 3, 1), (7, 4, 1), (7, 3, 2)]:  # seed, epoch, layer each change it
        assert np.mean(dropout_mask(*other, rows, 50, DROPOUT) != mask) > 0.3


def test_in_process_fit_with_dropout_leaves_the_callers_torch_generator_alone(tabular):
    X, y = tabular
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with engine("local", workers=1):  # the worker is this process
        _mlp(dropout=DROPOUT, epochs=1).fit(X, y)
    assert torch.equal(torch.rand(3), expected)


def test_convnet_with_dropout_is_the_same_on_1_and_2_workers():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, target = digits.images[:300] / 16.0, digits.target[:300]
    probabilities = []
    for workers in (1, 2):
        with engine("local", workers=workers):
            model = ConvNetClassifier(
                channels=(4,),
                hidden_layer_sizes=(16,),
                dropout=DROPOUT,
                batch_size=32,
                epochs=2,
                random_state=0,
                early_stopping=False,
                verbose=False,
            ).fit(images, target)
        probabilities.append(model.predict_proba(images))
    assert np.abs(probabilities[1] - probabilities[0]).max() < INVARIANCE_TOLERANCE


def test_label_sorted_rows_train_on_mixed_batches_whatever_the_workers(tabular):
    """Guaranteed: sorted input equals single-process torch on the sorted rows (each batch is
    a random subset of all rows, not one worker's run of a label); its accuracy is that of
    shuffled input up to the difference between two data orders, not equal to it."""
    X, y = tabular
    order = np.argsort(y, kind="stable")
    X_sorted, y_sorted = X[order], y[order]
    reference = reference_weights(X_sorted, y_sorted, optimizer="adam", lr=0.01, epochs=8, seed=7)
    with engine("local", workers=2):  # worker 0 holds classes 0 and 1, worker 1 classes 1, 2
        on_sorted = _mlp(learning_rate=0.01, epochs=8).fit(X_sorted, y_sorted)
        shuffled = _mlp(learning_rate=0.01, epochs=8).fit(X, y)
    assert _max_difference(on_sorted, reference) < INVARIANCE_TOLERANCE
    assert abs(on_sorted.score(X, y) - shuffled.score(X, y)) < 0.05


def test_keyed_dataset_with_dropout_is_the_same_on_1_and_2_workers(tabular, tmp_path):
    import pyarrow as pa

    from shardlearn.data import write_dataset

    X, y = tabular
    table = pa.table({**{f"f{j}": X[:, j] for j in range(N_FEATURES)}, "label": y})
    # Every shard holds one range of labels, and a worker holds whole shards.
    ds = write_dataset(table, tmp_path / "ds", label="label", partitions=4, strategy="range:label")
    probabilities = []
    for workers in (1, 2):
        with engine("local", workers=workers):
            model = _mlp(dropout=DROPOUT, learning_rate=0.01, epochs=2).fit(ds)
        probabilities.append(model.predict_proba(X))
    assert np.abs(probabilities[1] - probabilities[0]).max() < INVARIANCE_TOLERANCE


def test_best_epoch_is_the_budget_a_refit_needs(tabular, tmp_path):
    import pyarrow as pa

    from shardlearn.data import write_dataset

    X, y = tabular
    table = pa.table({**{f"f{j}": X[:, j] for j in range(N_FEATURES)}, "label": y})
    ds = write_dataset(table, tmp_path / "ds", label="label", partitions=2, split=(0.6, 0.4, 0))
    budget = 40
    with engine("local", workers=2):
        stopped = _mlp(
            learning_rate=0.05, epochs=budget, early_stopping=True, n_iter_no_change=3
        ).fit(ds)
        assert stopped.best_epoch_ < stopped.n_iter_ < budget  # it stopped, and kept earlier
        refit = _mlp(learning_rate=0.05, epochs=stopped.best_epoch_).fit(ds)
        full = _mlp(learning_rate=0.05, epochs=3).fit(ds)
    assert refit.n_iter_ == refit.best_epoch_ == stopped.best_epoch_
    assert full.n_iter_ == full.best_epoch_ == 3  # no early stopping: the budget, all of it
    # The early-stopped model's weights are exactly those after best_epoch_ epochs.
    assert _max_difference(refit, stopped.state_dict_) == 0.0


def test_worker_killed_between_epochs_resumes_from_the_checkpoint(tabular):
    import os
    import signal

    from shardlearn.models._training.fitting import prepare_training

    X, y = tabular
    with engine("local", workers=2):
        for mode in ({}, {"parallelism": "pipeline", "stages": 2}):
            uninterrupted = _mlp(epochs=3, **mode).fit(X, y)
            model = _mlp(epochs=3, **mode)
            with prepare_training(model, X, y) as ctx:
                killed = []

                def kill_worker_after_first_epoch(info, ctx=ctx, killed=killed):
                    if info.iteration == 1:
                        os.kill(ctx.group.pids[1], signal.SIGKILL)
                        killed.append(True)

                model._fit_context(ctx, callback=kill_worker_after_first_epoch)
            assert killed and model.restarts_ == 1 and model.n_iter_ == 3
            # Same data order and seeds after the restart: the very same weights.
            assert _max_difference(model, uninterrupted.state_dict_) == 0.0, mode


def test_convnet_reaches_95_percent_on_digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(
        digits.images / 16.0,
        digits.target,
        test_size=0.25,
        random_state=0,
        stratify=digits.target,
    )
    with engine("local", workers=2):
        model = ConvNetClassifier(
            epochs=15, batch_size=32, learning_rate=3e-3, random_state=0, verbose=False
        ).fit(X_train, y_train)
    assert model.architecture_["image_shape"] == [1, 8, 8]
    assert model.score(X_test, y_test) >= 0.95


def test_convnet_reads_flat_rows_as_one_row_images_a_1d_convolution(tabular):
    # scikit-learn's checks (and tabular users) fit flat rows of any length without image_shape.
    X, y = tabular
    with engine("local", workers=1):
        model = ConvNetClassifier(
            channels=(4,),
            hidden_layer_sizes=(8,),
            epochs=30,
            learning_rate=1e-2,
            random_state=0,
            early_stopping=False,
            verbose=False,
        ).fit(X, y)
    assert model.architecture_["image_shape"] == [1, 1, N_FEATURES]
    assert model.state_dict_["1.weight"].shape == (4, 1, 1, 3)  # a 1 x 3 kernel
    # Reference: plain torch's 1-D network -- a length-3 convolution, pooling by 2 along the
    # row -- with the fitted weights gives the same probabilities.
    weights = {k: torch.from_numpy(v) for k, v in model.state_dict_.items()}
    conv = torch.nn.Conv1d(1, 4, 3, padding=1)
    conv.weight.data, conv.bias.data = weights["1.weight"][:, :, 0, :], weights["1.bias"]
    hidden, output = torch.nn.Linear(16, 8), torch.nn.Linear(8, N_CLASSES)
    hidden.weight.data, hidden.bias.data = weights["5.weight"], weights["5.bias"]
    output.weight.data, output.bias.data = weights["7.weight"], weights["7.bias"]
    reference = torch.nn.Sequential(
        torch.nn.Unflatten(1, (1, N_FEATURES)),
        conv,
        torch.nn.ReLU(),
        torch.nn.MaxPool1d(2),
        torch.nn.Flatten(),
        hidden,
        torch.nn.ReLU(),
        output,
    )
    with torch.no_grad():
        expected = torch.softmax(reference(torch.from_numpy(X)), dim=1).numpy()
    np.testing.assert_allclose(model.predict_proba(X), expected, atol=1e-6)
    assert model.score(X, y) > 0.8  # it learns: chance is 1/3


def test_convnet_with_an_even_kernel_on_odd_sized_images():
    # Padding k // 2 grows a side by one for an even k: 7 x 7 -> 8 x 8, pooled to 4 x 4.
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images[:200, :7, :7] / 16.0
    with engine("local", workers=1):
        model = ConvNetClassifier(
            channels=(4,), kernel_size=2, epochs=1, random_state=0, verbose=False
        ).fit(images, digits.target[:200])
    assert model.state_dict_["5.weight"].shape[1] == 4 * 4 * 4
    assert model.predict_proba(images).shape == (200, len(model.classes_))


def test_predicting_leaves_the_fitted_state_alone_and_a_refit_is_seen(tabular):
    X, y = tabular
    with engine("local", workers=1):
        model = _mlp().fit(X, y)
        state = dict(vars(model))
        first = model.predict_proba(X)
        # scikit-learn's check_dict_unchanged: the cached torch network is not in __dict__.
        assert vars(model).keys() == state.keys()
        assert all(vars(model)[name] is value for name, value in state.items())
        np.testing.assert_array_equal(model.predict_proba(X), first)
        refitted = model.set_params(random_state=8).fit(X, y).predict_proba(X)
        fresh = _mlp(random_state=8).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(refitted, fresh)
    assert np.abs(refitted - first).max() > 1e-3


def test_convnet_on_an_ingested_image_dataset_with_early_stopping(tmp_path):
    from sklearn.datasets import load_digits

    from shardlearn.data.images import ingest_images

    digits = load_digits()
    ds = ingest_images(
        (digits.images, digits.target),
        tmp_path / "digits",
        max_value=16,
        partitions=2,
        split=(0.7, 0.15, 0.15),
        seed=0,
    )
    with engine("local", workers=1):
        model = ConvNetClassifier(
            epochs=40, n_iter_no_change=2, tol=0.05, random_state=0, verbose=False
        ).fit(ds)
    assert model.architecture_["input_scale"] == pytest.approx(1 / 255)
    # Early stopping on the valid split stopped well before the 40 epochs.
    assert 3 <= model.n_iter_ < 40
    assert len(model.validation_scores_) == model.n_iter_
    test = ds.read("test")
    X_test = np.column_stack([test.column(c).to_numpy() for c in model.feature_names_in_])
    y_test = test.column("label").to_numpy()
    assert model.score(X_test.astype(np.float64), y_test) >= 0.9


def test_pipeline_with_preprocessor_on_mixed_columns(tmp_path):
    import pyarrow as pa

    from shardlearn.data import write_dataset
    from shardlearn.models import Pipeline
    from shardlearn.preprocess import Preprocessor

    rng = np.random.default_rng(0)
    n = 300
    color = rng.choice(["red", "green", "blue"], n)
    size = rng.normal(size=n)
    label = np.where((color == "red") ^ (size > 0), "yes", "no")
    table = pa.table({"color": color, "size": size, "label": label})
    ds = write_dataset(table, tmp_path / "ds", label="label", partitions=2, split=(0.8, 0.2, 0))
    with engine("local", workers=1):
        pipe = Pipeline(
            Preprocessor.auto(ds.schema),
            MLPClassifier(
                hidden_layer_sizes=(16,),
                epochs=60,
                learning_rate=0.02,
                random_state=0,
                verbose=False,
            ),
        ).fit(ds)
    assert np.mean(pipe.predict(table) == label) > 0.9


def test_artifact_round_trip_uses_safetensors_and_predicts_identically(tabular):
    X, y = tabular
    with engine("local", workers=1):
        model = _mlp(epochs=3).fit(X, y)
    meta, arrays, files = model._to_artifact()
    json.dumps(meta)  # model.json must be plain JSON
    assert set(files) == {"weights.safetensors"} and arrays == {}
    from safetensors.torch import load

    assert sorted(load(files["weights.safetensors"])) == sorted(model.state_dict_)
    restored = MLPClassifier._from_artifact(json.loads(json.dumps(meta)), arrays, files)
    np.testing.assert_array_equal(restored.predict_proba(X), model.predict_proba(X))
    assert restored.get_params() == model.get_params()
    tampered = dict(meta, architecture={**meta["architecture"], "hidden": [4]})
    with pytest.raises(ArtifactError, match="different architecture"):
        MLPClassifier._from_artifact(tampered, arrays, files)


def test_saved_and_loaded_through_the_registry_format(tabular, tmp_path):
    from sklearn.datasets import load_digits

    from shardlearn.registry import load, save

    digits = load_digits()
    with engine("local", workers=1):
        model = ConvNetClassifier(
            channels=(4,), hidden_layer_sizes=(8,), epochs=1, random_state=0, verbose=False
        ).fit(digits.images, digits.target)
    save(model, tmp_path / "convnet")
    stored = sorted(p.name for p in (tmp_path / "convnet").rglob("*") if p.is_file())
    assert "weights.safetensors" in stored
    restored = load(tmp_path / "convnet")
    assert type(restored) is ConvNetClassifier
    np.testing.assert_array_equal(
        restored.predict_proba(digits.images[:50]), model.predict_proba(digits.images[:50])
    )


def test_bad_parameters_and_input_are_clear_errors(tabular):
    X, y = tabular
    with pytest.raises(ValueError, match="'learning_rate' parameter of MLPClassifier"):
        MLPClassifier(learning_rate=0).fit(X, y, engine="local")
    with pytest.raises(ValueError, match="tuple of positive ints"):
        with engine("local", workers=1):
            MLPClassifier(hidden_layer_sizes=(8, 0), verbose=False).fit(X, y)
    with engine("local", workers=1):
        with pytest.raises(ValueError, match="needs at least 3 workers"):
            _mlp(parallelism="pipeline", stages=3).fit(X, y)
        with pytest.raises(ValueError, match="more than the 2 layers"):
            _mlp(hidden_layer_sizes=(4,), parallelism="pipeline", stages=3).fit(X, y)
        with pytest.raises(EngineError, match="no GPU"):
            _mlp(device="cuda").fit(X, y)
        with pytest.raises(DataError, match="holds 9 pixels"):
            ConvNetClassifier(image_shape=(3, 3), verbose=False).fit(X, y)


def test_models_registered_and_torch_not_imported_by_models_package():
    code = (
        "import sys, shardlearn.models as m; from shardlearn.models import _registry as r; "
        "print(r.MODELS['mlp'].__name__, r.MODELS['convnet'].__name__, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["MLPClassifier", "ConvNetClassifier", "False"]


def test_missing_torch_is_an_import_error_naming_the_extra():
    # A finder that refuses torch, as an environment without it would. (Not
    # sys.modules["torch"] = None: scikit-learn's scipy reads sys.modules["torch"] as a module.)
    code = (
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "from shardlearn.models.neural_network._neural import MLPClassifier\n"
        "try:\n    MLPClassifier().fit([[0.0], [1.0]], [0, 1], engine='local')\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'shardlearn[torch]'" in out.stdout
