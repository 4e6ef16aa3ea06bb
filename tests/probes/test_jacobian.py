"""The Jacobian probe against closed forms, torch.func.vmap(jacrev), and its own exact route.

Every reference is computed independently of the probe: the softmax-regression Jacobian by hand
(``J = (diag p − ppᵀ)W``), linear models in closed form, a small CNN's Jacobians by
``torch.func.vmap(torch.func.jacrev(...))`` (torch 2.13), and the sketches against the exact route.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from funnelscope.errors import FunnelscopeInputError
from funnelscope.probes.jacobian import SUMMARY_KEYS, jacobian_spectrum

pytestmark = pytest.mark.usefixtures("one_thread")


def float64_mlp(d: int = 8, k: int = 10, hidden: int = 16, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, k)).double()


def gram_from_rows(rows: np.ndarray) -> np.ndarray:
    """``M = 𝒥𝒥ᵀ`` from per-example Jacobians of shape (n, k, ...), flattened per example."""
    flat = rows.reshape(rows.shape[0], -1)
    return flat @ flat.T


def relative_frobenius(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ----------------------------------------------------------------------------------------------------
# Exact route against closed forms and an independent autodiff path


@pytest.mark.parametrize("keep_gram", [True, False])  # primal (n × n) and dual (r × r, r = (k − 1)·d = 18 < n = 30)
def test_softmax_regression_matches_closed_form(keep_gram: bool) -> None:
    torch.manual_seed(1)
    model = nn.Linear(6, 4).double()
    x = torch.randn(30, 6, dtype=torch.float64)
    W, b = model.weight.detach().numpy(), model.bias.detach().numpy()
    logits = x.numpy() @ W.T + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    jacobians = np.stack([(np.diag(pi) - np.outer(pi, pi)) @ W for pi in p])  # J_i = (diag p − ppᵀ)W
    expected = gram_from_rows(jacobians)

    spectrum = jacobian_spectrum(model, x, keep_gram=keep_gram)

    assert spectrum.summary()["method"] == ("exact/primal" if keep_gram else "exact/dual")
    np.testing.assert_allclose(spectrum.diagonal, np.diag(expected), rtol=1e-12)
    evals = np.sort(np.linalg.eigvalsh(expected))[::-1]
    np.testing.assert_allclose(spectrum.eigenvalues, np.clip(evals, 0, None), rtol=1e-10, atol=1e-14 * evals[0])
    if keep_gram:
        np.testing.assert_allclose(spectrum.gram, expected, rtol=1e-12, atol=1e-16)
    summary = spectrum.summary()
    assert list(summary) == list(SUMMARY_KEYS)
    assert summary["trace"] == pytest.approx(np.trace(expected), rel=1e-12)
    assert summary["lambda_max"] == pytest.approx(evals[0], rel=1e-12)
    # J_i = A_i W with A_i = diag p − ppᵀ symmetric and A_i𝟙 = 0: a k(k−1)/2 = 6-dimensional space of A's,
    # mapped injectively by the full-row-rank W, so rank M = 6 (numpy agrees on the hand-built rows)
    assert summary["matrix_rank"] == 6 == np.linalg.matrix_rank(jacobians.reshape(30, -1))
    off = expected - np.diag(np.diag(expected))
    assert summary["offdiag_ratio"] == pytest.approx(np.linalg.norm(off) / np.linalg.norm(expected), rel=1e-10)


@pytest.mark.parametrize("keep_gram", [True, False])
def test_linear_logits_give_one_eigenvalue(keep_gram: bool) -> None:
    # f(x) = Wx + b: every J_i = W, so M = ‖W‖_F² 𝟙𝟙ᵀ with the single non-zero eigenvalue n‖W‖_F²
    torch.manual_seed(2)
    n = 20
    model = nn.Linear(3, 2).double()
    spectrum = jacobian_spectrum(model, torch.randn(n, 3, dtype=torch.float64), output="logits",
                                 keep_gram=keep_gram)
    w2 = float((model.weight.detach() ** 2).sum())
    assert spectrum.eigenvalues[0] == pytest.approx(n * w2, rel=1e-12)
    assert np.all(spectrum.eigenvalues[1:] <= 1e-12 * n * w2)
    np.testing.assert_allclose(spectrum.diagonal, w2, rtol=1e-12)
    summary = spectrum.summary()
    assert summary["matrix_rank"] == 1
    assert summary["stable_rank"] == pytest.approx(1.0, rel=1e-12)
    # ‖M − diag M‖_F² / ‖M‖_F² = (n² − n) w⁴ / (n² w⁴)
    assert summary["offdiag_ratio"] == pytest.approx(np.sqrt(1 - 1 / n), rel=1e-12)
    assert spectrum.fit is None  # one non-zero eigenvalue: nothing to fit


def small_cnn(seed: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3), nn.Tanh(),
        nn.Flatten(), nn.Linear(6 * 2 * 2, 5),
    ).double()


@pytest.mark.parametrize("output", ["probs", "log_probs", "logits"])
def test_exact_route_equals_vmap_jacrev_on_a_cnn(output: str) -> None:
    model = small_cnn()
    x = torch.randn(13, 2, 8, 8, dtype=torch.float64)
    transform = {"probs": lambda z: torch.softmax(z, -1), "log_probs": lambda z: torch.log_softmax(z, -1),
                 "logits": lambda z: z}[output]
    jacobians = torch.func.vmap(torch.func.jacrev(lambda xi: transform(model(xi[None]))[0]))(x)
    assert jacobians.shape == (13, 5, 2, 8, 8)
    expected = gram_from_rows(jacobians.detach().numpy())

    spectrum = jacobian_spectrum(model, x, output=output, keep_gram=True, batch_size=5)

    np.testing.assert_allclose(spectrum.gram, expected, rtol=1e-11, atol=1e-14 * np.abs(expected).max())
    evals = np.clip(np.sort(np.linalg.eigvalsh(expected))[::-1], 0, None)
    np.testing.assert_allclose(spectrum.eigenvalues, evals, rtol=1e-9, atol=1e-13 * evals[0])
    assert (spectrum.n, spectrum.k, spectrum.d) == (13, 5, 128)


def batchnorm_model() -> nn.Module:
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 4)).double()
    model.train()
    with torch.no_grad():  # "trained-ish" running statistics, far from the initial 0 / 1
        for _ in range(20):
            model(3.0 * torch.randn(32, 6, dtype=torch.float64) + 2.0)
    return model


def test_batch_size_does_not_matter_and_model_state_is_restored() -> None:
    model = batchnorm_model()
    running_mean = model[1].running_mean.clone()
    x = torch.randn(50, 6, dtype=torch.float64)
    small = jacobian_spectrum(model, x, batch_size=7, keep_gram=True)
    large = jacobian_spectrum(model, x, batch_size=64, keep_gram=True)
    np.testing.assert_allclose(small.gram, large.gram, rtol=1e-13, atol=1e-18)
    np.testing.assert_allclose(small.eigenvalues, large.eigenvalues, rtol=1e-12, atol=1e-15 * large.eigenvalues[0])
    # one example at a time (batch_size=1) is the per-example definition itself
    single = jacobian_spectrum(model, x, batch_size=1)
    np.testing.assert_allclose(single.diagonal, large.diagonal, rtol=1e-13)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    torch.testing.assert_close(model[1].running_mean, running_mean, rtol=0, atol=0)


class Infinite(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / 0.0


def test_mode_is_restored_on_error() -> None:
    model = nn.Sequential(batchnorm_model(), Infinite())
    model[0][3].eval()  # a mixed state must come back as it was
    with pytest.raises(FunnelscopeInputError, match="not finite"):
        jacobian_spectrum(model, torch.randn(4, 6, dtype=torch.float64))
    assert model.training and model[0][1].training and not model[0][3].training


# ----------------------------------------------------------------------------------------------------
# Sketches: unbiased, converging to the exact route under fixed seeds


def assert_converges(samples: np.ndarray, exact: np.ndarray) -> list[float]:
    """Mean of the first S of independent estimates against the exact value, for S = 4, 16, 64.

    For unbiased estimates ``E‖mean_S − M‖² = E‖M̂ − M‖²/S`` (the estimate of ``E‖M̂ − M‖²`` is the samples'
    own mean squared error); a bias ``b`` adds ``‖b‖²``, which does not shrink with S. The realised error
    must stay within 3× that predicted root-mean-square (the seeds are fixed, so the check is deterministic).
    """
    mean_square = np.mean([np.sum((one - exact) ** 2) for one in samples])
    errors = []
    for count in (4, 16, 64):
        error = float(np.linalg.norm(samples[:count].mean(0) - exact))
        assert error < 3 * np.sqrt(mean_square / count), (count, error, np.sqrt(mean_square / count))
        errors.append(error / float(np.linalg.norm(exact)))
    return errors


def test_output_probe_sketch_converges_to_exact_gram() -> None:
    model = float64_mlp(k=10)
    x = torch.randn(16, 8, dtype=torch.float64)
    exact = jacobian_spectrum(model, x, keep_gram=True).gram
    sketches = np.stack([
        jacobian_spectrum(model, x, method="sketch", probes=4, seed=seed, keep_gram=True).gram
        for seed in range(64)
    ])
    errors = assert_converges(sketches, exact)
    single = np.mean([relative_frobenius(one, exact) for one in sketches])
    assert errors[-1] < 0.5 * single  # 3/√64 = 0.375 of a single sketch's RMS error, by the bound above


def test_sketch_diagonal_is_hutchinson_and_reports_its_method() -> None:
    model = float64_mlp(k=10)
    x = torch.randn(60, 8, dtype=torch.float64)
    exact = jacobian_spectrum(model, x)
    sketches = [jacobian_spectrum(model, x, method="sketch", probes=6, seed=s) for s in range(64)]
    assert sketches[0].summary()["method"] == "sketch(m=6)/dual"  # r = 6·8 = 48 columns < n = 60 rows
    # E[(1/m)Σ_p ‖J_iᵀv_p‖²] = ‖J_i‖_F² (Hutchinson 1989)
    assert_converges(np.stack([one.diagonal for one in sketches]), exact.diagonal)


def test_method_auto_sketches_many_classes() -> None:
    model = float64_mlp(k=80)  # k > 64: auto uses 32 output probes
    spectrum = jacobian_spectrum(model, torch.randn(20, 8, dtype=torch.float64), method="auto", seed=0)
    assert spectrum.summary()["method"] == "sketch(m=32)/primal"


def test_input_countsketch_is_unbiased_and_close_for_large_p() -> None:
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(1024, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    with torch.no_grad():  # gradient rows with a common-mode part: a sketch without random signs is biased
        model[0].weight += 0.02
    x = torch.randn(12, 1024, dtype=torch.float64)
    exact = jacobian_spectrum(model, x, keep_gram=True)
    sketches = [jacobian_spectrum(model, x, project=64, seed=s, keep_gram=True) for s in range(64)]
    assert sketches[0].summary()["method"] == "exact+jl(p=64)/primal"
    assert_converges(np.stack([one.gram for one in sketches]), exact.gram)  # E[SSᵀ] = I
    large = jacobian_spectrum(model, x, project=768, seed=0)
    # one entry's relative error is about √(2/p) = 5% at p = 768; λ_max and the trace average many
    assert large.summary()["lambda_max"] == pytest.approx(exact.summary()["lambda_max"], rel=0.05)
    assert large.summary()["trace"] == pytest.approx(exact.summary()["trace"], rel=0.05)


def test_streamed_solver_agrees_with_dense() -> None:
    model = float64_mlp(d=8, k=10, hidden=32)
    x = torch.randn(300, 8, dtype=torch.float64)
    dense = jacobian_spectrum(model, x, keep_gram=True)  # r = 9·8 = 72 < n, but keep_gram: primal
    streamed = jacobian_spectrum(model, x, solver="streamed", seed=0)
    assert streamed.summary()["method"] == "exact/streamed(device)"
    # the tail refinement's block Krylov space spans the whole 72-dimensional dual: its Ritz values are the
    # eigenvalues to rounding
    np.testing.assert_allclose(streamed.eigenvalues[:32], dense.eigenvalues[:32], rtol=1e-8)
    assert streamed.summary()["trace"] == pytest.approx(dense.summary()["trace"], rel=1e-12)
    assert streamed.summary()["offdiag_ratio"] == pytest.approx(dense.summary()["offdiag_ratio"], rel=0.01)
    assert np.isnan(streamed.summary()["matrix_rank"])


# ----------------------------------------------------------------------------------------------------
# Parameters (empirical NTK), data forms, labels


def test_parameter_gram_of_linear_model_is_k_times_linear_kernel() -> None:
    # f = Wx + b: ∂f_c/∂W_c'a = δ_cc' x_a, ∂f_c/∂b_c' = δ_cc', so Θ_ij = Σ_c (x_i·x_j + 1) = k (x_i·x_j + 1)
    torch.manual_seed(6)
    model = nn.Linear(5, 3).double()
    x = torch.randn(9, 5, dtype=torch.float64)
    spectrum = jacobian_spectrum(model, x, output="logits", wrt="params", keep_gram=True)
    expected = 3 * (x.numpy() @ x.numpy().T + 1)
    np.testing.assert_allclose(spectrum.gram, expected, rtol=1e-12)
    assert spectrum.d == 5 * 3 + 3 and spectrum.wrt == "params"


def test_parameter_gram_matches_vmap_jacrev_with_softmax() -> None:
    model = float64_mlp(d=4, k=3, hidden=5)
    x = torch.randn(7, 4, dtype=torch.float64)
    params = {name: p.detach() for name, p in model.named_parameters()}

    def probs(weights: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return torch.softmax(torch.func.functional_call(model, weights, (xi[None],))[0], -1)

    jac = torch.func.vmap(torch.func.jacrev(probs), in_dims=(None, 0))(params, x)
    rows = np.concatenate([jac[name].reshape(7, 3, -1).numpy() for name in params], axis=2)
    spectrum = jacobian_spectrum(model, x, wrt="params", keep_gram=True)
    np.testing.assert_allclose(spectrum.gram, gram_from_rows(rows), rtol=1e-11)


def test_dataset_and_loader_give_the_tensor_result_with_their_labels() -> None:
    model = float64_mlp(k=4)
    x = torch.randn(33, 8, dtype=torch.float64)
    y = torch.randint(0, 4, (33,))
    reference = jacobian_spectrum(model, (x, y))
    for data in (TensorDataset(x, y), DataLoader(TensorDataset(x, y), batch_size=10)):
        other = jacobian_spectrum(model, data)
        np.testing.assert_allclose(other.eigenvalues, reference.eigenvalues, rtol=1e-12,
                                   atol=1e-14 * reference.eigenvalues[0])
        np.testing.assert_array_equal(other.labels, y.numpy())
    from_numpy = jacobian_spectrum(model, (x.numpy().astype(np.float32), y.numpy()))  # cast to the model's dtype
    np.testing.assert_allclose(from_numpy.diagonal, reference.diagonal, rtol=1e-5)


def test_per_class_and_confidence_tables_follow_their_definitions() -> None:
    model = float64_mlp(k=3)
    x = torch.randn(45, 8, dtype=torch.float64)
    y = np.arange(45) % 3
    spectrum = jacobian_spectrum(model, (x, y), keep_gram=True)
    dual = jacobian_spectrum(model, (x, y))  # class sums instead of the gram
    gram = spectrum.gram
    logits = model(x).detach()
    probs = torch.softmax(logits, 1).numpy()
    frame = spectrum.to_frame()
    assert list(frame.columns) == ["index", "diagonal", "label", "predicted", "confidence", "correct", "loss"]
    np.testing.assert_array_equal(frame["predicted"], probs.argmax(1))
    np.testing.assert_allclose(frame["confidence"], probs.max(1), rtol=1e-12)
    np.testing.assert_allclose(frame["loss"], -np.log(probs[np.arange(45), y]), rtol=1e-10)
    for table in (spectrum.per_class(), dual.per_class()):
        assert list(table.columns) == ["class", "count", "mean_diagonal", "mean_within", "mean_between",
                                       "accuracy", "mean_confidence"]
        for row in table.itertuples():
            inside = y == row._1
            block = gram[np.ix_(inside, inside)]
            within = (block.sum() - np.trace(block)) / (inside.sum() * (inside.sum() - 1))
            assert row.mean_within == pytest.approx(within, rel=1e-10)
            assert row.mean_between == pytest.approx(gram[np.ix_(inside, ~inside)].mean(), rel=1e-10)
            assert row.accuracy == pytest.approx(np.mean(probs[inside].argmax(1) == row._1))
    from scipy.stats import spearmanr

    relation = spectrum.confidence_relation()
    assert relation["spearman_confidence"] == pytest.approx(spearmanr(spectrum.diagonal, probs.max(1))[0])
    correct = probs.argmax(1) == y
    assert relation["mean_diagonal_correct"] == pytest.approx(spectrum.diagonal[correct].mean())
    from sklearn.metrics import roc_auc_score  # scikit-learn's ROC AUC of M_ii as a score for "misclassified"

    assert relation["auroc_incorrect"] == pytest.approx(roc_auc_score(~correct, spectrum.diagonal))
    unlabeled = jacobian_spectrum(model, x)
    assert np.isnan(unlabeled.confidence_relation()["accuracy"])
    with pytest.raises(FunnelscopeInputError, match="needs labels"):
        unlabeled.per_class()


# ----------------------------------------------------------------------------------------------------
# Bad input: one-line FunnelscopeInputError naming the problem


class IntegerOutput(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.argmax(1, keepdim=True).repeat(1, 3)


class ThreeDimensionalOutput(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[:, :, None]


LINEAR = nn.Linear(5, 3)
GOOD = torch.randn(10, 5)


@pytest.mark.parametrize(
    ("model", "inputs", "options", "message"),
    [
        (LINEAR, torch.randn(10, 4), {}, r"rejected inputs of shape \(10, 4\)"),
        (LINEAR, torch.empty(0, 5), {}, "empty"),
        (LINEAR, TensorDataset(torch.empty(0, 5)), {}, "empty"),
        (LINEAR, torch.tensor([[0.0, 1, 2, 3, float("nan")]] * 3), {}, "NaN or inf"),
        (LINEAR, torch.tensor([[0.0, 1, 2, 3, float("inf")]] * 3), {}, "NaN or inf"),
        (LINEAR, torch.ones(10, 5, dtype=torch.int64), {}, "floating-point"),
        (LINEAR, "data.csv", {}, "must be a tensor or array of inputs"),
        (IntegerOutput(), GOOD, {}, "floating point"),
        (ThreeDimensionalOutput(5, 3), GOOD, {}, r"must be \(n, k\)"),
        (nn.Linear(5, 1), GOOD, {}, "single output"),
        (nn.Linear(5, 1), GOOD, {"output": "log_probs"}, "single output"),
        ("model", GOOD, {}, "torch.nn.Module"),
        (LINEAR, GOOD, {"output": "softmax"}, "output='softmax' must be one of"),
        (LINEAR, GOOD, {"method": "svd"}, "method='svd' must be one of"),
        (LINEAR, GOOD, {"solver": "eig"}, "solver='eig' must be one of"),
        (LINEAR, GOOD, {"wrt": "weights"}, "wrt='weights' must be one of"),
        (LINEAR, GOOD, {"method": "sketch", "probes": 0}, "probes=0 must be a positive integer"),
        (LINEAR, GOOD, {"probes": 4}, "probes=4 applies to"),
        (LINEAR, GOOD, {"batch_size": 0}, "batch_size=0"),
        (LINEAR, GOOD, {"project": 5}, "project=5 must be smaller than d=5"),
        (LINEAR, GOOD, {"seed": 1.5}, "seed=1.5"),
        (LINEAR, GOOD, {"keep_gram": True, "solver": "streamed"}, "keep_gram"),
        (LINEAR, (GOOD, np.array([0, 1])), {}, "same first dimension"),
        (LINEAR, (GOOD, np.arange(10)), {}, r"labels must be in \[0, 3\)"),
        (LINEAR, (GOOD, np.linspace(0, 1, 10)), {}, "integer class indices"),
        (LINEAR, GOOD, {"device": "gpu7"}, "not a torch device"),
    ],
)
def test_bad_input_raises_one_line_error(model: object, inputs: object, options: dict, message: str) -> None:
    with pytest.raises(FunnelscopeInputError, match=message) as caught:
        jacobian_spectrum(model, inputs, **options)
    assert "\n" not in str(caught.value)


def test_dict_batches_are_explained() -> None:
    class Dicts(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> dict:
            return {"x": torch.zeros(5), "y": 0}

    with pytest.raises(FunnelscopeInputError, match=r"dicts \(keys \['x', 'y'\]\)"):
        jacobian_spectrum(LINEAR, Dicts())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numerical_zeros_are_separated_from_small_eigenvalues(dtype: torch.dtype) -> None:
    # softmax rows sum to zero, so vec J(x_i) lies in {B ∈ ℝ^{k×d}: 𝟙ᵀB = 0}, of dimension (k − 1)·d = 72;
    # 100 generic examples of a tanh network span it: rank 72 in float32 as in float64, not the 80 = k·d
    # columns (noise counted) and not fewer (small true eigenvalues cut)
    model = float64_mlp(d=8, k=10, hidden=32).to(dtype)
    spectrum = jacobian_spectrum(model, torch.randn(100, 8, dtype=dtype))
    assert spectrum.summary()["matrix_rank"] == 72


def test_plot_panels() -> None:
    from funnelscope.report.jacobian_plots import plot_jacobian

    model = float64_mlp(k=3)
    x = torch.randn(40, 8, dtype=torch.float64)
    y = np.arange(40) % 3
    with_gram = plot_jacobian(jacobian_spectrum(model, (x, y), keep_gram=True))
    assert [ax.get_title() for ax in with_gram.axes[:3]] == ["ESD", "diagonal (per-example sensitivity)",
                                                              "Jacobian cosine"]
    assert plot_jacobian(jacobian_spectrum(model, (x, y))).axes[2].get_title() == "class-pair mean of M_ij"
    assert len(plot_jacobian(jacobian_spectrum(model, x)).axes) == 2
