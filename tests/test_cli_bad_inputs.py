"""Bad input through the command line, one case a row: exit code 2, no traceback, one ``error:`` line naming
the problem, and nothing written to ``--out``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from funnelscope.studies.models import mlp
from tests.conftest import assert_user_error, run_cli, write_image_folder

NO_CUDA = "this machine has no CUDA device"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad-inputs")
    torch.manual_seed(0)
    model = root / "mlp.pt"
    torch.jit.script(mlp(width=8).eval()).save(str(model))
    x = np.random.default_rng(0).random((20, 64)).astype(np.float32)
    np.savez(root / "float_labels.npz", x=x, y=np.linspace(0, 3, 20))
    np.savez(root / "labels_out_of_range.npz", x=x, y=np.full(20, 12))
    (root / "a_file").write_text("not a directory")
    (root / "random.pt").write_bytes(np.random.default_rng(1).integers(129, 256, 4096, dtype=np.uint8).tobytes())
    (root / "text.pt").write_text("epoch,loss\n1,0.5\n")
    (root / "table.csv").write_text("f1,name,label\n0.5,a,1\n1.5,b,0\n")
    write_image_folder(root / "images", {"cat": [(8, 8)], "dog": [(6, 9)]})
    (root / "twice").mkdir()
    for name in ("a.pt", "b.pt"):
        torch.save({"fc.weight": torch.ones(4, 4)}, root / "twice" / name)
    return {"model": model, "root": root}


CASES = {
    "jacobian on a missing CUDA": (["jacobian", "{model}", "digits", "--device", "cuda"], [NO_CUDA]),
    "hessian on a missing CUDA": (["hessian", "{model}", "digits", "--device", "cuda"], [NO_CUDA]),
    "landscape on a missing CUDA": (["landscape", "{model}", "digits", "--device", "cuda", "--points", "3"],
                                    [NO_CUDA]),
    "linearity on a missing CUDA": (["linearity", "{model}", "digits", "--device", "cuda"], [NO_CUDA]),
    "weights on a missing CUDA": (["weights", "{model}", "--device", "cuda"], [NO_CUDA]),
    "an unknown device": (["jacobian", "{model}", "digits", "--device", "warp"], ["device='warp'", "not a torch"]),
    "--n beyond the data": (["jacobian", "{model}", "digits", "--n", "5000"], ["--n 5000", "only 450 examples"]),
    "float labels": (["hessian", "{model}", "{root}/float_labels.npz"], ["float_labels.npz", "non-integer"]),
    "labels out of range": (["hessian", "{model}", "{root}/labels_out_of_range.npz"], ["[0, 10)", "12"]),
    "--out that is a file": (["jacobian", "{model}", "digits", "--out", "{root}/a_file"], ["a_file", "not a dir"]),
    "landscape --points 0": (["landscape", "{model}", "digits", "--points", "0"], ["points=0"]),
    "random bytes as a .pt": (["weights", "{root}/random.pt"], ["random.pt: not a torch file"]),
    "a text file as a .pt": (["weights", "{root}/text.pt"], ["text.pt: a text file ('epoch,loss'"]),
    "one tensor in two files": (["weights", "{root}/twice"], ["'fc.weight' is in both", "a.pt and", "b.pt"]),
    "a misspelt DATA option": (["jacobian", "{model}", "{root}/table.csv:lable=label"],
                               ["unknown option 'lable' for table.csv", "label="]),
    "a text feature column": (["jacobian", "{model}", "{root}/table.csv"], ["feature column 'name' is not numeric"]),
    "images of two sizes": (["jacobian", "{model}", "{root}/images"], ["6×9, but the first image is 8×8",
                                                                       "size=S"]),
    "--set without =": (["study", "labels", "--out", "{root}/study", "--set", "lr"], ["--set expects key=value"]),
    "--set lr=abc": (["study", "labels", "--out", "{root}/study", "--set", "lr=abc"], ['lr="abc"', "a number"]),
    "--set lr=\"fast\"": (["study", "labels", "--out", "{root}/study", "--set", 'lr="fast"'], ["a number"]),
    "--set width=\"wide\"": (["study", "labels", "--out", "{root}/study", "--set", 'width="wide"'],
                              ["an integer"]),
    "--set seeds=0": (["study", "labels", "--out", "{root}/study", "--set", "seeds=0"], ["seeds=0", "> 0"]),
    "--ray nobody listening": (["study", "labels", "--out", "{root}/study", "--ray", "127.0.0.1:1"],
                               ["--ray 127.0.0.1:1: no Ray cluster reachable there"]),
    "--ray not an address": (["study", "labels", "--out", "{root}/study", "--ray", "cluster"],
                             ["--ray 'cluster'", "host:port"]),
    "--set data=\"mnist\"": (["study", "labels", "--out", "{root}/study", "--set", 'data="mnist"'],
                              ["digits or an existing .npz"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(case: str, files: dict[str, Path]) -> None:
    arguments, needles = CASES[case]
    out = files["root"] / "out"
    arguments = [argument.format(**files) for argument in arguments]
    if "--out" not in arguments:
        arguments += ["--out", str(out)]
    assert_user_error(run_cli(*arguments), *needles)
    assert not out.exists(), case
    assert not (files["root"] / "study").exists(), case
    assert not list(files["root"].glob(".*staging*")), case
