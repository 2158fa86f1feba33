"""MLPClassifier(warm_start=True): more epochs from the same weights and optimiser state,
against plain torch continuing its network and optimiser the same way."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

torch = pytest.importorskip("torch")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import make_classification  # noqa: E402

from shardlearn.data import write_dataset  # noqa: E402
from shardlearn.engine import engine  # noqa: E402
from shardlearn.models.neural_network._neural import MLPClassifier  # noqa: E402
from shardlearn.models.neural_network._torch import epoch_permutation  # noqa: E402
from shardlearn.registry import load, save  # noqa: E402

N_ROWS, N_FEATURES, N_CLASSES, BATCH, SEED = 240, 6, 3, 32, 7
HIDDEN = (12, 8, 10)  # three hidden layers: enough for two pipeline stages
FIRST, MORE = 2, 2
RATES = {"adam": 0.01, "sgd": 0.1}


@pytest.fixture(scope="module")
def tabular() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(N_ROWS, N_FEATURES, n_informative=4, n_classes=N_CLASSES,
                               random_state=1)  # fmt: skip
    return X.astype(np.float32), y


def _torch_continued(X, y, optimizer: str) -> dict:
    """Plain torch: FIRST epochs; then a new network and optimiser load both state dicts and
    train epochs FIRST .. FIRST + MORE - 1 (the library's documented data order)."""

    def build():
        torch.manual_seed(SEED)
        sizes, layers = [N_FEATURES, *HIDDEN], []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.Tanh()]
        net = torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-1], N_CLASSES))
        if optimizer == "sgd":
            return net, torch.optim.SGD(net.parameters(), lr=RATES["sgd"], momentum=0.9)
        return net, torch.optim.Adam(net.parameters(), lr=RATES["adam"])

    def train(net, opt, epochs) -> None:
        for epoch in epochs:
            order = epoch_permutation(SEED, epoch, X.shape[0])
            for start in range(0, X.shape[0], BATCH):
                rows = order[start : start + BATCH]
                opt.zero_grad()
                logits = net(torch.from_numpy(X[rows]))
                torch.nn.functional.cross_entropy(logits, torch.from_numpy(y[rows])).backward()
                opt.step()

    net, opt = build()
    train(net, opt, range(FIRST))
    saved = (net.state_dict(), opt.state_dict())
    net, opt = build()
    net.load_state_dict(saved[0])
    opt.load_state_dict(saved[1])
    train(net, opt, range(FIRST, FIRST + MORE))
    return {name: t.detach().numpy() for name, t in net.state_dict().items()}


def _mlp(**params) -> MLPClassifier:
    defaults = dict(hidden_layer_sizes=HIDDEN, activation="tanh", batch_size=BATCH,
                    epochs=FIRST, random_state=SEED, early_stopping=False, verbose=False,
                    warm_start=True)  # fmt: skip
    return MLPClassifier(**{**defaults, **params})


def _gap(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b)
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("execution,workers", [("in_process", 1), ("workers", 2)])
def test_warm_start_equals_torch_continuing_network_and_optimiser(
    tabular, optimizer, execution, workers
):
    X, y = tabular
    order = np.argsort(y, kind="stable")  # label-sorted: each worker holds about one class
    X, y = X[order], y[order]
    model = _mlp(optimizer=optimizer, learning_rate=RATES[optimizer], execution=execution)
    with engine("local", workers=workers):
        model.fit(X, y)
        first = dict(model.state_dict_)
        assert model.set_params(epochs=MORE).fit(X, y) is model
    assert model.execution_ == execution
    assert model.n_iter_ == model.best_epoch_ == FIRST + MORE
    assert len(model.loss_curve_) == len(model.epoch_seconds_) == FIRST + MORE
    assert _gap(model.state_dict_, first) > 1e-3  # it trained on
    assert _gap(model.state_dict_, _torch_continued(X, y, optimizer)) < 1e-5


@pytest.mark.parametrize("strategy", ["range:label", "hash:key"])
@pytest.mark.parametrize("parallelism", ["data", "pipeline"])
def test_warm_start_on_a_dataset_equals_one_longer_fit(tabular, tmp_path, strategy, parallelism):
    X, y = tabular
    columns = {f"f{j}": X[:, j] for j in range(N_FEATURES)}
    table = pa.table({**columns, "key": np.arange(N_ROWS) % 17, "label": y})
    ds = write_dataset(table, tmp_path / "ds", label="label", partitions=4, strategy=strategy)
    params = {"execution": "workers", "parallelism": parallelism, "stages": 2}
    with engine("local", workers=2):
        once = _mlp(**params, epochs=FIRST + MORE).fit(ds)
        warm = _mlp(**params).fit(ds)
        warm.set_params(epochs=MORE).fit(ds)
    assert warm.n_iter_ == once.n_iter_ == FIRST + MORE
    assert _gap(warm.state_dict_, once.state_dict_) < 1e-6


def test_an_artifact_saved_with_warm_start_continues_after_loading(tabular, tmp_path):
    X, y = tabular
    with engine("local", workers=1):
        model = _mlp().fit(X, y)
        save(model, tmp_path / "warm")
        save(clone(model).set_params(warm_start=False).fit(X, y), tmp_path / "plain")
        loaded = load(tmp_path / "warm").set_params(epochs=MORE).fit(X, y)
        model.set_params(epochs=MORE).fit(X, y)
        assert _gap(loaded.state_dict_, model.state_dict_) == 0.0
        plain = load(tmp_path / "plain").set_params(warm_start=True)
        with pytest.raises(ValueError, match="saved with warm_start=False"):
            plain.fit(X, y)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"learning_rate": 0.5}, r"learning_rate=0.01 \(now 0.5\)"),
        ({"optimizer": "sgd"}, r"optimizer='adam' \(now 'sgd'\)"),
        ({"hidden_layer_sizes": (4,)}, "Keep the layers, features and classes"),
    ],
)
def test_warm_start_refuses_what_the_optimiser_state_does_not_belong_to(tabular, change, message):
    X, y = tabular
    with engine("local", workers=1):
        model = _mlp(learning_rate=0.01).fit(X, y)
        with pytest.raises(ValueError, match=message):
            model.set_params(**change).fit(X, y)


def test_warm_start_is_a_parameter_that_clone_keeps():
    assert MLPClassifier(warm_start=True).get_params()["warm_start"] is True
    assert clone(MLPClassifier(warm_start=True)).warm_start is True
    assert MLPClassifier().warm_start is False
