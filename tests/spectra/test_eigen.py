"""The eigen-routine against independent computations (numpy's SVD in float64) and conv slicing by hand."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from funnelscope.models.matrices import layer_shape, weight_slices
from funnelscope.spectra import eigen
from funnelscope.spectra.eigen import add_lower_gram, gram_eigenvalues


def numpy_squared_singular_values(matrix: np.ndarray) -> np.ndarray:
    return np.sort(np.linalg.svd(matrix.astype(np.float64), compute_uv=False) ** 2)


@pytest.mark.parametrize("shape", [(50, 20), (20, 50), (33, 33)])
def test_gram_eigenvalues_equal_squared_singular_values(shape: tuple[int, int]) -> None:
    matrix = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    expected = numpy_squared_singular_values(matrix.numpy())
    np.testing.assert_allclose(gram_eigenvalues(matrix).numpy(), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gram_eigenvalues(matrix, method="svd").numpy(), expected, rtol=1e-10, atol=1e-10)


def test_batched_equals_one_by_one() -> None:
    batch = torch.randn(5, 40, 30, generator=torch.Generator().manual_seed(2))
    together = gram_eigenvalues(batch)
    for one, values in zip(batch, together, strict=True):
        np.testing.assert_allclose(values.numpy(), numpy_squared_singular_values(one.numpy()), rtol=1e-10)


def test_chunked_gram_equals_unchunked(monkeypatch: pytest.MonkeyPatch) -> None:
    matrix = torch.randn(1000, 16, generator=torch.Generator().manual_seed(3))
    whole = gram_eigenvalues(matrix)
    monkeypatch.setattr(eigen, "_CHUNK_ELEMENTS", 16 * 7)  # 7 rows at a time
    np.testing.assert_allclose(gram_eigenvalues(matrix).numpy(), whole.numpy(), rtol=1e-12)


def test_half_precision_input() -> None:
    matrix = torch.randn(60, 40, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    values = gram_eigenvalues(matrix)
    assert values.dtype == torch.float64
    expected = numpy_squared_singular_values(matrix.to(torch.float64).numpy())
    np.testing.assert_allclose(values.numpy(), expected, rtol=1e-10)


def test_rank_deficiency() -> None:
    low_rank = torch.randn(60, 3, dtype=torch.float64) @ torch.randn(3, 40, dtype=torch.float64)
    gram_values = gram_eigenvalues(low_rank)
    assert (gram_values >= 0).all()
    # rank 3: through the Gram the 37 smallest are rounding noise (≲ 1e-13 of λ_max) ...
    assert float(gram_values[-4]) < 1e-13 * float(gram_values[-1])
    # ... and the SVD route resolves them to ≲ 1e-28 of λ_max (squared float64 epsilon)
    svd_values = gram_eigenvalues(low_rank, method="svd")
    assert float(svd_values[-4]) < 1e-26 * float(svd_values[-1])
    assert int((svd_values > 1e-20 * svd_values.max()).sum()) == 3


def test_conv_slices_by_hand() -> None:
    # weight (out=3, in=2, kh=2, kw=2) with distinct entries: slice p is W[:, :, i, j] for p = 2i + j
    weight = torch.arange(3 * 2 * 2 * 2, dtype=torch.float32).reshape(3, 2, 2, 2)
    slices = weight_slices(weight)
    assert slices.shape == (4, 3, 2)
    for i in range(2):
        for j in range(2):
            assert torch.equal(slices[2 * i + j], weight[:, :, i, j])
    assert layer_shape(tuple(weight.shape)) == (3, 2, 4)
    # pooled ESD = the union of the slices' squared singular values
    pooled = np.sort(gram_eigenvalues(slices).reshape(-1).numpy())
    by_hand = np.sort(np.concatenate([numpy_squared_singular_values(weight[:, :, i, j].numpy())
                                      for i in range(2) for j in range(2)]))
    np.testing.assert_allclose(pooled, by_hand, rtol=1e-10)


def test_conv1d_and_conv3d_slices() -> None:
    conv1d = torch.randn(4, 3, 5)
    assert torch.equal(weight_slices(conv1d)[2], conv1d[:, :, 2])
    conv3d = torch.randn(4, 3, 2, 3, 2)
    slices = weight_slices(conv3d)
    assert slices.shape == (12, 4, 3)
    assert torch.equal(slices[1 * 6 + 2 * 2 + 1], conv3d[:, :, 1, 2, 1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["c", "fortran", "strided"])
def test_add_lower_gram_equals_the_product(dtype: torch.dtype, layout: str) -> None:
    # naive reference: the float64 product rows·rowsᵀ; only the lower triangle is written, and twice adds twice
    torch.manual_seed(0)
    base = torch.randn(70, 90, dtype=dtype)
    rows = {"c": base, "fortran": base.T.contiguous().T, "strided": torch.randn(70, 180, dtype=dtype)[:, ::2]}[layout]
    gram = torch.zeros(70, 70, dtype=torch.float64)
    add_lower_gram(gram, rows)
    add_lower_gram(gram, rows)
    expected = 2 * rows.double() @ rows.double().T
    torch.testing.assert_close(gram.tril(), expected.tril(), rtol=1e-12, atol=1e-12)
    assert float(gram.triu(1).abs().max()) == 0.0


def test_add_lower_gram_of_a_large_gram_in_blocks() -> None:
    # n = 20 000 across block boundaries, in a subprocess: one threaded OpenBLAS dsyrk of this size (scipy 1.17.1,
    # OpenBLAS 0.3.30, SkylakeX kernels, two threads) killed the process with a segmentation fault; the blocks'
    # entries against the product rows_i · rows_j computed directly
    script = textwrap.dedent("""
        import torch
        from funnelscope.spectra.eigen import add_lower_gram
        rows = torch.randn(20_000, 256, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        gram = torch.zeros(20_000, 20_000, dtype=torch.float64)
        add_lower_gram(gram, rows)
        picked = torch.tensor([0, 1023, 1024, 1025, 9_999, 19_999])
        expected = rows[picked] @ rows.T
        lower = torch.arange(20_000)[None, :] <= picked[:, None]
        error = ((gram[picked] - expected) * lower).abs().max() / expected.abs().max()
        above = (gram[picked] * ~lower).abs().max()
        print(float(error), float(above))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    error, above = map(float, done.stdout.split())
    assert error < 1e-13 and above == 0.0


def test_large_grams_and_non_finite_matrices() -> None:
    # cols ≥ 1024 takes the threaded one-at-a-time route; a NaN or an overflow gives NaN eigenvalues, not garbage
    generator = torch.Generator().manual_seed(3)
    batch = torch.randn(3, 1030, 1025, generator=generator, dtype=torch.float64)
    batch[1, 5, 7] = float("nan")
    batch[2, 0, 0] = 1e300
    values = gram_eigenvalues(batch)
    np.testing.assert_allclose(values[0].numpy(), numpy_squared_singular_values(batch[0].numpy()), rtol=1e-9,
                               atol=1e-9 * float(values[0].max()))
    assert bool(values[1].isnan().all()) and bool(values[2].isnan().all())
