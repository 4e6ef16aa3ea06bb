"""Every supported way of handing weights over gives the same tensors; bad files give clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from funnelscope.errors import FunnelscopeInputError
from funnelscope.models.sources import open_weights


def as_dict(source) -> dict[str, torch.Tensor]:
    return {ref.name: ref.load() for ref in source}


def test_module_state_dict_and_files_agree(tmp_path: Path, mlp: nn.Module) -> None:
    expected = {k: v for k, v in mlp.state_dict().items() if k.endswith("weight")}
    save_file(dict(mlp.state_dict()), str(tmp_path / "model.safetensors"))
    torch.save(mlp.state_dict(), tmp_path / "weights.pt")
    torch.save({"epoch": 3, "state_dict": mlp.state_dict()}, tmp_path / "checkpoint.pt")
    scripted = torch.jit.script(mlp)
    scripted.save(str(tmp_path / "scripted.pt"))
    for source in (mlp, mlp.state_dict(), tmp_path / "model.safetensors", tmp_path / "weights.pt",
                   tmp_path / "checkpoint.pt", tmp_path / "scripted.pt"):
        got = as_dict(open_weights(source))
        assert sorted(got) == sorted(expected), source
        for key, value in expected.items():
            assert torch.equal(got[key], value), (source, key)


def test_module_kinds_and_transposed_convolutions() -> None:
    model = nn.Sequential(nn.Embedding(30, 8), nn.Conv1d(8, 6, 3), nn.Conv2d(6, 5, 3), nn.Conv3d(5, 4, 2),
                          nn.ConvTranspose2d(4, 7, 3), nn.LayerNorm(7), nn.Linear(7, 2))
    refs = list(open_weights(model))
    assert [ref.kind for ref in refs] == ["embedding", "conv1d", "conv2d", "conv3d", "conv2d", "linear"]
    transposed = refs[4]
    assert transposed.shape == (7, 4, 3, 3)  # (out, in, k, k), though stored as (in, out, k, k)


def test_sharded_directory_with_index(tmp_path: Path, mlp: nn.Module) -> None:
    state = dict(mlp.state_dict())
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[:3], "model-00002-of-00002.safetensors": keys[3:]}
    weight_map = {}
    for shard, shard_keys in shards.items():
        save_file({k: state[k] for k in shard_keys}, str(tmp_path / shard))
        weight_map.update(dict.fromkeys(shard_keys, shard))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "config.json").write_text("{}")  # a Hugging Face directory looks like this
    got = as_dict(open_weights(tmp_path))
    assert [name for name in got] == ["0.weight", "2.weight", "4.weight"]  # natural order
    assert torch.equal(got["2.weight"], state["2.weight"])


def test_missing_shard_is_reported(tmp_path: Path, mlp: nn.Module) -> None:
    save_file(dict(mlp.state_dict()), str(tmp_path / "a.safetensors"))
    index = {"weight_map": {"0.weight": "a.safetensors", "2.weight": "b.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FunnelscopeInputError, match=r"shard b\.safetensors is missing"):
        open_weights(tmp_path)


def test_truncated_and_garbage_safetensors(tmp_path: Path, safetensors_file: Path) -> None:
    data = safetensors_file.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) - 100])
    with pytest.raises(FunnelscopeInputError, match="truncated"):
        open_weights(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + bytes(64))
    with pytest.raises(FunnelscopeInputError, match=r"garbage\.safetensors"):
        open_weights(garbage)


def test_pickles_need_trust(tmp_path: Path, mlp: nn.Module) -> None:
    path = tmp_path / "full_model.pt"
    torch.save(mlp, path)
    with pytest.raises(FunnelscopeInputError, match="trust_pickle"):
        open_weights(path)
    assert len(open_weights(path, trust_pickle=True)) == 3


def test_missing_path_and_unsupported_objects(tmp_path: Path) -> None:
    with pytest.raises(FunnelscopeInputError, match="no such file"):
        open_weights(tmp_path / "nope.safetensors")
    with pytest.raises(FunnelscopeInputError, match="cannot read weights from a int: pass"):
        open_weights(3)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FunnelscopeInputError, match="unsupported file type"):
        open_weights(tmp_path / "notes.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FunnelscopeInputError, match=r"no \.safetensors"):
        open_weights(empty)
