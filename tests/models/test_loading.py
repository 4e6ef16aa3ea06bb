"""Loading runnable models and data sets, and the seeded trainer (determinism, exact label noise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from funnelscope.datasets import LabelledData, load_data, load_digits
from funnelscope.errors import FunnelscopeInputError
from funnelscope.models.loading import load_model
from funnelscope.studies.models import mlp, small_cnn
from funnelscope.studies.training import shuffle_labels, train_classifier


def test_factory_with_weights_torchscript_and_pickle(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = mlp(width=32, batch_norm=True).eval()
    save_file(dict(model.state_dict()), str(tmp_path / "mlp.safetensors"))
    torch.jit.script(model).save(str(tmp_path / "mlp_script.pt"))
    torch.save(model, tmp_path / "mlp_pickle.pt")
    x = torch.rand(5, 64)
    expected = model(x)
    spec = "funnelscope.studies.models:mlp"
    loaded = [
        load_model(spec, weights=tmp_path / "mlp.safetensors", factory_kwargs={"width": 32, "batch_norm": True}),
        load_model(tmp_path / "mlp_script.pt"),
        load_model(tmp_path / "mlp_pickle.pt", trust_pickle=True),
    ]
    for other in loaded:
        torch.testing.assert_close(other.eval()(x), expected)


def test_model_errors(tmp_path: Path) -> None:
    torch.save(mlp(), tmp_path / "pickle.pt")
    with pytest.raises(FunnelscopeInputError, match="--trust-pickle"):
        load_model(tmp_path / "pickle.pt")
    torch.save(mlp().state_dict(), tmp_path / "state.pt")
    with pytest.raises(FunnelscopeInputError, match="module:factory with --weights"):
        load_model(tmp_path / "state.pt")
    with pytest.raises(FunnelscopeInputError, match="does not fit"):
        load_model("funnelscope.studies.models:mlp", weights=tmp_path / "state.pt", factory_kwargs={"width": 16})
    with pytest.raises(FunnelscopeInputError, match="cannot import"):
        load_model("funnelscope.studies.models:nope", weights=tmp_path / "state.pt")
    with pytest.raises(FunnelscopeInputError, match="needs --weights"):
        load_model("funnelscope.studies.models:mlp")


def test_digits_split_is_fixed_and_scaled() -> None:
    test, train = load_digits(split="test"), load_digits(split="train")
    assert len(test) + len(train) == 1797  # scikit-learn's digits
    assert float(test.x.min()) == 0.0 and float(test.x.max()) == 1.0
    assert torch.equal(load_digits(split="test").x, test.x)
    image = load_data("digits:image")
    assert image.x.shape == (len(test), 1, 8, 8)
    assert torch.equal(image.x.reshape(len(test), 64), test.x)
    assert len(load_data("digits:train", limit=100)) == 100


def test_data_files_and_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.ones((4, 3), np.float32), y=np.arange(4))
    data = load_data(tmp_path / "d.npz")
    assert data.x.shape == (4, 3) and data.y.tolist() == [0, 1, 2, 3]
    torch.save({"x": torch.zeros(2, 3)}, tmp_path / "d.pt")
    assert load_data(tmp_path / "d.pt").y is None
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 3), np.float32))
    with pytest.raises(FunnelscopeInputError, match="empty"):
        load_data(tmp_path / "empty.npz")
    np.savez(tmp_path / "bad.npz", x=np.ones((4, 3)), y=np.arange(3))
    with pytest.raises(FunnelscopeInputError, match="3 labels for 4 inputs"):
        load_data(tmp_path / "bad.npz")
    with pytest.raises(FunnelscopeInputError, match="unknown data set"):
        load_data("digits:colour")


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.37, 1.0])
def test_label_noise_fraction_is_exact(fraction: float) -> None:
    labels = torch.arange(1000) % 10
    noisy = shuffle_labels(labels, fraction, seed=3)
    # the shuffled set is exactly round(f·n) examples: re-derive it from the same seed
    generator = torch.Generator().manual_seed(3)
    chosen = torch.randperm(1000, generator=generator)[: round(fraction * 1000)]
    untouched = torch.ones(1000, dtype=torch.bool)
    untouched[chosen] = False
    assert torch.equal(noisy[untouched], labels[untouched])
    assert sorted(noisy[chosen].tolist()) == sorted(labels[chosen].tolist())  # shuffled among themselves
    assert torch.equal(torch.bincount(noisy), torch.bincount(labels))


def test_training_is_deterministic_and_learns() -> None:
    train = load_digits(split="train", image=True)
    small = LabelledData(train.x[:300], train.y[:300], "digits subset")
    histories = []
    for _ in range(2):
        torch.manual_seed(0)
        result = train_classifier(small_cnn(width=4), small, epochs=3, batch_size=32, lr=0.1, seed=1,
                                  schedule="cosine")
        histories.append(result.history)
    assert histories[0].equals(histories[1])
    assert histories[0]["train_loss"].iloc[-1] < histories[0]["train_loss"].iloc[0]
