"""DATA from files a user has: .npy pairs (memory-mapped), Parquet/CSV tables, image folders; each checked
against arrays built in the test, and every bad spec a one-line error naming the file."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from funnelscope.data_files import split_spec
from funnelscope.datasets import load_data
from funnelscope.errors import FunnelscopeInputError
from funnelscope.studies.models import mlp
from tests.conftest import assert_user_error, run_cli, write_image_folder


def mapped_files(tensor: torch.Tensor) -> set[str]:
    """The files whose memory mapping holds ``tensor``'s first byte (from ``/proc/self/maps``)."""
    address = tensor.data_ptr()
    files = set()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        low, high = (int(part, 16) for part in fields[0].split("-"))
        if low <= address < high and len(fields) >= 6:
            files.add(fields[5])
    return files


def test_split_spec_takes_the_longest_existing_path(tmp_path: Path) -> None:
    odd = tmp_path / "a:b.csv"
    odd.write_text("f,label\n1,0\n")
    assert split_spec(f"{odd}:label=label") == (odd, {"label": "label"})
    assert split_spec(str(odd)) == (odd, {})
    assert split_spec("missing.csv:label=y") == (Path("missing.csv"), {"label": "y"})


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_npy_pair_is_memory_mapped_not_copied(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((300, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(300) % 4)
    data = load_data(f"{tmp_path / 'x.npy'}:y=y.npy")  # y relative to the folder of x
    assert torch.equal(data.x, torch.from_numpy(x)) and data.y.tolist() == list(np.arange(300) % 4)
    assert str(tmp_path / "x.npy") in mapped_files(data.x)
    limited = load_data(tmp_path / "x.npy", limit=10)
    assert limited.y is None and limited.x.shape == (10, 5)
    assert str(tmp_path / "x.npy") in mapped_files(limited.x)


def test_npy_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((6, 2), np.float32))
    np.save(tmp_path / "half.npy", np.full(6, 0.5))
    np.save(tmp_path / "short.npy", np.arange(5))
    with pytest.raises(FunnelscopeInputError, match=r"x\.npy:y: holds non-integer labels"):
        load_data(f"{tmp_path / 'x.npy'}:y=half.npy")
    with pytest.raises(FunnelscopeInputError, match="5 labels for 6 inputs"):
        load_data(f"{tmp_path / 'x.npy'}:y=short.npy")
    with pytest.raises(FunnelscopeInputError, match=r"nope\.npy: no such file"):
        load_data(f"{tmp_path / 'x.npy'}:y=nope.npy")
    with pytest.raises(FunnelscopeInputError, match=r"unknown option 'labels' for x\.npy \(expected y=\)"):
        load_data(f"{tmp_path / 'x.npy'}:labels=short.npy")


def test_tables_parquet_and_csv(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [0.5, 1.5, 2.5], "b": [1, 2, 3], "target": [2, 0, 1]})
    frame.to_parquet(tmp_path / "t.parquet")
    data = load_data(f"{tmp_path / 't.parquet'}:label=target")
    assert data.x.dtype == torch.float32 and data.x.tolist() == [[0.5, 1.0], [1.5, 2.0], [2.5, 3.0]]
    assert data.y.tolist() == [2, 0, 1]
    frame.rename(columns={"target": "label"}).to_csv(tmp_path / "t.csv", index=False)
    assert load_data(tmp_path / "t.csv").y.tolist() == [2, 0, 1]  # a column named label is the default
    frame.assign(target=["dog", "cat", "dog"]).to_csv(tmp_path / "words.csv", index=False)
    assert load_data(f"{tmp_path / 'words.csv'}:label=target").y.tolist() == [1, 0, 1]  # sorted: cat, dog
    assert load_data(tmp_path / "t.parquet").y is None  # no label column: inputs only, all three features
    assert load_data(tmp_path / "t.parquet").x.shape == (3, 3)


def test_table_errors(tmp_path: Path) -> None:
    pd.DataFrame({"a": [1.0, 2.0], "name": ["x", "y"], "label": [0, 1]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(FunnelscopeInputError, match=r"t\.csv: feature column 'name' is not numeric"):
        load_data(tmp_path / "t.csv")
    with pytest.raises(FunnelscopeInputError, match=r"t\.csv: no column 'target' for label="):
        load_data(f"{tmp_path / 't.csv'}:label=target")
    pd.DataFrame({"a": [1.0, 2.0], "label": [0.5, 1.0]}).to_csv(tmp_path / "half.csv", index=False)
    with pytest.raises(FunnelscopeInputError, match="non-integer labels"):
        load_data(tmp_path / "half.csv")


def test_image_folder_resized_scaled_and_normalised(tmp_path: Path) -> None:
    root = tmp_path / "images"
    write_image_folder(root, {"cat": [(6, 6), (9, 5)], "dog": [(4, 8)]})
    data = load_data(f"{root}:size=4:mean=0.5:std=0.25,0.5,1")
    assert data.x.shape == (3, 3, 4, 4) and data.y.tolist() == [0, 0, 1]  # cat before dog
    expected = [[0, 0, 0], [0, 10, 20], [10, 0, 0]]  # flat colours survive bilinear resizing exactly
    for example, colour in enumerate(expected):
        pixel = (np.array(colour) / 255.0 - 0.5) / np.array([0.25, 0.5, 1.0])
        assert torch.allclose(data.x[example], torch.tensor(pixel, dtype=torch.float32)[:, None, None]
                              .expand(3, 4, 4), atol=1e-6)
    grey = load_data(f"{root}:size=3x5:mode=L")
    assert grey.x.shape == (3, 1, 3, 5) and float(grey.x.max()) <= 1.0


def test_image_folder_errors(tmp_path: Path) -> None:
    root = tmp_path / "images"
    write_image_folder(root, {"a": [(6, 6)], "b": [(4, 8)]})
    with pytest.raises(FunnelscopeInputError, match=r"0\.png: 4×8, but the first image is 6×6: pass size=S"):
        load_data(root)
    with pytest.raises(FunnelscopeInputError, match="2 values for 3 channels"):
        load_data(f"{root}:size=4:mean=0.5,0.5")
    with pytest.raises(FunnelscopeInputError, match=r"size=big must be S or HxW"):
        load_data(f"{root}:size=big")
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    with pytest.raises(FunnelscopeInputError, match="no images in class sub-folders"):
        load_data(empty)


def test_cli_reads_a_table_and_an_image_folder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tmp_path / "mlp.pt"
    torch.jit.script(mlp(width=8).eval()).save(str(model))
    features = np.random.default_rng(0).random((30, 64))
    pd.DataFrame(features, columns=[f"f{i}" for i in range(64)]).assign(target=np.arange(30) % 10).to_parquet(
        tmp_path / "t.parquet")
    result = run_cli("linearity", str(model), f"{tmp_path / 't.parquet'}:label=target", "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    assert (pd.read_parquet(tmp_path / "o" / "mlp" / "linearity.parquet")["n"] == 30).all()
    assert_user_error(run_cli("linearity", str(model), f"{tmp_path / 't.parquet'}:lable=target"),
                      "unknown option 'lable'", "label=")


def test_a_folder_named_like_digits_is_read_as_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_image_folder(tmp_path / "digits_scans", {"a": [(4, 4)], "b": [(4, 4)]})
    monkeypatch.chdir(tmp_path)
    data = load_data("digits_scans:mode=L")  # an existing path with options, not the built-in digits
    assert data.x.shape == (2, 1, 4, 4) and data.y.tolist() == [0, 1]
