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


def chgnet_checkpoint(model: nn.Module) -> dict[str, object]:
    """The layout of chgnet 0.4.2's pretrained ``chgnet_0.3.0_e29f68s314m37.pth.tar`` (read from the wheel):
    plain containers around the state dict, and an Adam state holding tensors of its own."""
    state = model.state_dict()
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 64)).sum().backward()
    optimizer.step()
    return {
        "model": {"state_dict": state, "model_args": {"atom_fea_dim": 64, "composition_model": "MPtrj",
                                                      "activation": "silu", "non_linearity": None}},
        "optimizer": optimizer.state_dict(),
        "scheduler": {"T_max": 1000, "eta_min": 1e-5, "base_lrs": [1e-3], "last_epoch": 29},
        "training_history": {"e": {"train": [0.1, 0.05], "val": [0.2], "test": []}},
        "trainer_args": {"targets": "efsm", "optimizer": "Adam", "scheduler_params": {}},
    }


def test_chgnet_checkpoint_is_found_at_depth(tmp_path: Path, mlp: nn.Module) -> None:
    path = tmp_path / "chgnet_0.3.0_e29f68s314m37.pth.tar"
    torch.save(chgnet_checkpoint(mlp), path)
    source = open_weights(path)  # weights_only=True: plain containers only
    assert source.location == "model/state_dict" and source.prefix == ""
    assert "at model/state_dict" in source.description
    got = as_dict(source)
    assert sorted(got) == ["0.weight", "2.weight", "4.weight"]
    assert torch.equal(got["2.weight"], mlp.state_dict()["2.weight"])


def test_optimizer_state_is_never_the_state_dict(mlp: nn.Module) -> None:
    """A one-layer model's Adam state holds more tensors per parameter (step, exp_avg, exp_avg_sq) than
    its state dict (weight, bias): the optimizer's subtree is not searched."""
    layer = nn.Linear(8, 4)
    checkpoint = chgnet_checkpoint(mlp)
    checkpoint["model"]["state_dict"] = layer.state_dict()
    source = open_weights(checkpoint)
    assert source.location == "model/state_dict"
    assert [ref.name for ref in source] == ["weight"]


def test_lightning_checkpoint_prefix_is_stripped_and_loads_into_the_architecture(tmp_path: Path,
                                                                                 mlp: nn.Module) -> None:
    from funnelscope.models.loading import load_model

    state = {f"model.{key}": value for key, value in mlp.state_dict().items()}
    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 7, "global_step": 700, "pytorch-lightning_version": "2.4.0", "state_dict": state,
                "optimizer_states": [], "lr_schedulers": [], "callbacks": {}}, path)
    source = open_weights(path)
    assert (source.location, source.prefix) == ("state_dict", "model.")
    assert "prefix 'model.' stripped" in source.description
    assert [ref.name for ref in source] == ["0.weight", "2.weight", "4.weight"]
    loaded = load_model("tests.conftest:small_mlp", weights=path)
    assert torch.equal(loaded.state_dict()["4.weight"], mlp.state_dict()["4.weight"])


def test_prefix_is_kept_when_the_architecture_names_it(tmp_path: Path) -> None:
    from funnelscope.models.loading import load_model

    wrapped = nn.Module()
    wrapped.model = nn.Linear(3, 2)
    path = tmp_path / "wrapped.pt"
    torch.save({"state_dict": wrapped.state_dict()}, path)
    assert open_weights(path).prefix == "model."
    loaded = load_model("tests.models.test_sources:wrapped_linear", weights=path)
    assert torch.equal(loaded.model.weight, wrapped.model.weight)


def wrapped_linear() -> nn.Module:
    """A module whose only child is called ``model``: its own state dict names begin with ``model.``."""
    module = nn.Module()
    module.model = nn.Linear(3, 2)
    return module


def test_ddp_prefixes_are_stripped_repeatedly_and_only_when_shared() -> None:
    weight = torch.ones(3, 3)
    assert open_weights({"module.model.fc.weight": weight}).prefix == "module.model."
    mixed = open_weights({"module.fc.weight": weight, "head.weight": weight})
    assert mixed.prefix == "" and [ref.name for ref in mixed] == ["module.fc.weight", "head.weight"]


def test_checkpoint_without_tensors_lists_its_keys(tmp_path: Path) -> None:
    path = tmp_path / "args_only.pt"
    torch.save({"epoch": 3, "config": {"width": 8}}, path)
    with pytest.raises(FunnelscopeInputError, match=r"args_only\.pt: holds no tensors at any depth "
                                                    r"\(top-level keys: epoch, config\)"):
        open_weights(path)


def test_same_tensor_in_two_files_of_a_directory(tmp_path: Path, mlp: nn.Module) -> None:
    state = dict(mlp.state_dict())
    torch.save({"0.weight": state["0.weight"], "2.weight": state["2.weight"]}, tmp_path / "a.pt")
    torch.save({"2.weight": state["2.weight"] * 2}, tmp_path / "b.pt")
    with pytest.raises(FunnelscopeInputError, match=r"'2\.weight' is in both .*a\.pt and .*b\.pt"):
        open_weights(tmp_path)
    safetensors_dir = tmp_path / "st"
    safetensors_dir.mkdir()
    save_file({"0.weight": state["0.weight"]}, str(safetensors_dir / "x.safetensors"))
    save_file({"0.weight": state["0.weight"]}, str(safetensors_dir / "y.safetensors"))
    with pytest.raises(FunnelscopeInputError, match=r"'0\.weight' is in both .*x\.safetensors and .*y\.safet"):
        open_weights(safetensors_dir)


@pytest.mark.parametrize(("content", "message"), [
    (bytes(range(7, 256)) * 8, r"random\.pt: not a torch file \(neither a zip archive nor a pickle; starts "
                               r"with 07 08 09 0a\)"),
    (b"hello world, not a model\n", r"random\.pt: a text file \('hello world, not a model'…\), not a torch"),
    (b"", r"random\.pt: empty file"),
])
def test_files_that_are_not_torch_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "random.pt"
    path.write_bytes(content)
    for trust_pickle in (False, True):
        with pytest.raises(FunnelscopeInputError, match=message):
            open_weights(path, trust_pickle=trust_pickle)
