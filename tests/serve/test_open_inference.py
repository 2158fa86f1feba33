"""The Open Inference Protocol (KServe V2) routes, through the real tritonclient over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pyarrow as pa
import pytest

from .conftest import Served, loan_table

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture
def client(served: Served) -> Iterator[object]:
    triton = httpclient.InferenceServerClient(url=served.url.removeprefix("http://"))
    yield triton
    triton.close()


def auth(served: Served) -> dict[str, str]:
    return {"Authorization": f"Bearer {served.token}"}


def features(rows: int, seed: int) -> pa.Table:
    return loan_table(rows, seed).drop_columns(["default"])


def tensors(table: pa.Table, *, binary: bool) -> list[object]:
    """One input tensor per column, as a tritonclient user builds them."""
    inputs = []
    for name, datatype in (("income", "FP64"), ("debt_ratio", "FP64"), ("region", "BYTES")):
        values = table.column(name).to_numpy(zero_copy_only=False)
        array = values.astype(object if datatype == "BYTES" else np.float64)
        tensor = httpclient.InferInput(name, [len(array)], datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


def test_server_and_model_are_live_and_ready(served: Served, client: object) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("loans", headers=auth(served))
    assert not client.is_model_ready("no-such-model", headers=auth(served))


def test_model_metadata_maps_the_input_schema(served: Served, client: object) -> None:
    metadata = client.get_model_metadata("loans", headers=auth(served))
    assert metadata["name"] == "loans" and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [
        {"name": "income", "datatype": "FP64", "shape": [-1]},
        {"name": "debt_ratio", "datatype": "FP64", "shape": [-1]},
        {"name": "region", "datatype": "BYTES", "shape": [-1]},
    ]
    assert metadata["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]},
    ]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_equals_the_model_on_the_same_rows(
    served: Served, client: object, binary: bool
) -> None:
    table = features(30, seed=11)
    outputs = [
        httpclient.InferRequestedOutput(name, binary_data=binary)
        for name in ("label", "probabilities")
    ]
    result = client.infer(
        "loans", tensors(table, binary=binary), outputs=outputs, headers=auth(served)
    )
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), served.model.predict_proba(table), rtol=1e-12
    )
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
    assert labels == served.model.predict(table).tolist()
    assert result.get_response()["model_version"] == "1"


def test_infer_without_requested_outputs_returns_both(served: Served, client: object) -> None:
    # tritonclient's default: binary inputs, no outputs named (all of them, binary).
    table = features(3, seed=12)
    result = client.infer("loans", tensors(table, binary=True), headers=auth(served))
    assert result.as_numpy("probabilities").shape == (3, 2)
    assert result.as_numpy("label").shape == (3,)


def bad_request(served: Served, client: object, inputs: list[object]) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        client.infer("loans", inputs, headers=auth(served))
    return caught.value


def test_wrong_datatype_is_a_400_with_the_protocol_error(served: Served, client: object) -> None:
    inputs = tensors(features(2, seed=13), binary=False)
    wrong = httpclient.InferInput("income", [2], "FP32")
    wrong.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32), binary_data=False)
    error = bad_request(served, client, [wrong, *inputs[1:]])
    assert error.status() == "400"
    assert error.message() == "input 'income' has datatype FP32; this model takes FP64"


def test_wrong_shape_and_missing_input_are_listed_in_one_400(
    served: Served, client: object
) -> None:
    inputs = tensors(features(2, seed=14), binary=False)
    wrong = httpclient.InferInput("debt_ratio", [1, 2], "FP64")
    wrong.set_data_from_numpy(np.array([[0.1, 0.2]]), binary_data=False)
    error = bad_request(served, client, [inputs[0], wrong])  # region missing
    assert error.status() == "400"
    assert error.message() == (
        "input 'debt_ratio' has shape [1, 2]; send [N] or [N, 1]; missing input(s) 'region'"
    )


def test_a_bad_value_is_named_with_its_row(served: Served) -> None:
    body = {
        "inputs": [
            {"name": "income", "shape": [2, 1], "datatype": "FP64", "data": [[1.0], ["x"]]},
            {"name": "debt_ratio", "shape": [2], "datatype": "FP64", "data": [0.1, 0.2]},
            {"name": "region", "shape": [2], "datatype": "BYTES", "data": ["north", 3]},
        ]
    }
    response = httpx.post(f"{served.url}/v2/models/loans/infer", json=body, headers=auth(served))
    assert response.status_code == 400
    assert response.json() == {
        "error": "column 'income' expects a finite number, got 'x'; "
        "column 'region' expects a string, got 3 (row 1)"
    }


def test_no_token_is_a_401(served: Served, client: object) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer("loans", tensors(features(1, seed=15), binary=False))
    assert caught.value.status() == "401"
    assert caught.value.message().startswith("missing bearer token")
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("loans")
    assert caught.value.status() == "401"


def test_unknown_model_is_a_404(served: Served, client: object) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("nope", headers=auth(served))
    assert caught.value.status() == "404"
    assert caught.value.message().startswith("no model named 'nope' is served")


def test_too_many_rows_is_a_413(served: Served, client: object) -> None:
    rows = served.config.max_rows + 1
    error = bad_request(served, client, tensors(features(rows, seed=16), binary=True))
    assert error.status() == "413"


def test_infer_is_counted_in_the_metrics(served: Served, client: object) -> None:
    def predicted_rows() -> float:
        text = httpx.get(f"{served.url}/metrics", headers=auth(served)).text
        line = next(
            x for x in text.splitlines() if x.startswith("shardlearn_predicted_rows_total{")
        )
        return float(line.rsplit(" ", 1)[1])

    before = predicted_rows()
    client.infer("loans", tensors(features(4, seed=17), binary=False), headers=auth(served))
    assert predicted_rows() == before + 4


def test_a_binary_tensor_of_the_wrong_datatype_is_a_400(served: Served, client: object) -> None:
    inputs = tensors(features(2, seed=18), binary=True)
    wrong = httpclient.InferInput("income", [2], "FP32")
    wrong.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32), binary_data=True)
    error = bad_request(served, client, [wrong, *inputs[1:]])
    assert error.status() == "400"
    assert error.message() == "input 'income' has datatype FP32; this model takes FP64"


def test_versioned_routes_answer_only_the_served_version(served: Served, client: object) -> None:
    table = features(2, seed=19)
    result = client.infer(
        "loans", tensors(table, binary=False), model_version="1", headers=auth(served)
    )
    assert result.as_numpy("probabilities").shape == (2, 2)
    assert client.get_model_metadata("loans", model_version="1", headers=auth(served))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("loans", tensors(table, binary=False), model_version="2", headers=auth(served))
    assert caught.value.status() == "404"
    assert "version 2 is not served" in caught.value.message()
