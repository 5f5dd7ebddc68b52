"""Tests of :func:`common.networks.load_weights`: plain/DDP/nested state dicts, and errors a user can act on."""

from __future__ import annotations

import pathlib
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from common.networks import load_weights


def _net(seed: int = 0, width: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        OrderedDict(
            conv=torch.nn.Conv2d(2, width, 3), norm=torch.nn.BatchNorm2d(width), head=torch.nn.Conv2d(width, 2, 1)
        )
    )


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0, msg=key)


@pytest.fixture
def trained() -> torch.nn.Module:
    net = _net(seed=1)
    net.norm.running_mean += 3.0  # buffers must round-trip too
    return net


def test_round_trip_plain_state_dict(tmp_path: Path, trained: torch.nn.Module) -> None:
    path = tmp_path / "model.pt"
    torch.save(trained.state_dict(), path)
    fresh = _net(seed=2)
    assert not torch.equal(fresh.conv.weight, trained.conv.weight)
    out = load_weights(fresh, path)
    assert out is fresh
    _assert_same_state(fresh, trained)


def test_path_given_as_str(tmp_path: Path, trained: torch.nn.Module) -> None:
    path = tmp_path / "model.pt"
    torch.save(trained.state_dict(), path)
    _assert_same_state(load_weights(_net(seed=2), str(path), map_location=torch.device("cpu")), trained)


def test_ddp_module_prefix_is_stripped(tmp_path: Path, trained: torch.nn.Module) -> None:
    path = tmp_path / "ddp.pt"
    torch.save({f"module.{k}": v for k, v in trained.state_dict().items()}, path)
    _assert_same_state(load_weights(_net(seed=2), path), trained)


@pytest.mark.parametrize("extra", [{}, {"optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}}])
def test_model_nesting_is_unwrapped(tmp_path: Path, trained: torch.nn.Module, extra: dict) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"model": trained.state_dict(), **extra}, path)
    _assert_same_state(load_weights(_net(seed=2), path), trained)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "models" / "model.pt"
    with pytest.raises(FileNotFoundError, match=str(path)):
        load_weights(_net(), path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_weights(_net(), tmp_path)  # a folder is not a checkpoint


def test_missing_and_unexpected_keys_are_named(tmp_path: Path, trained: torch.nn.Module) -> None:
    path = tmp_path / "model.pt"
    state = trained.state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["head.bias"]
    torch.save(state, path)
    fresh = _net(seed=2)
    with pytest.raises(ValueError, match=r"missing \['head.bias'\], unexpected \['extra.weight'\]") as err:
        load_weights(fresh, path)
    assert str(path) in str(err.value)


def test_other_network_is_rejected(tmp_path: Path, trained: torch.nn.Module) -> None:
    path = tmp_path / "model.pt"
    torch.save(trained.state_dict(), path)
    with pytest.raises(ValueError, match="does not match the network"):
        load_weights(torch.nn.Linear(2, 2), path)  # other keys


def test_size_mismatch_is_a_value_error(tmp_path: Path, trained: torch.nn.Module) -> None:
    path = tmp_path / "model.pt"
    torch.save(trained.state_dict(), path)
    with pytest.raises(ValueError, match=r"(?s)does not match the network.*size mismatch for conv.weight") as err:
        load_weights(_net(width=8), path)  # same keys, other shapes
    assert str(path) in str(err.value)


class _Payload:
    """Unpickling it would create ``target``: proof that code in the file ran."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (pathlib.Path.touch, (self.target,))


def test_weights_only_refuses_pickled_objects(tmp_path: Path, trained: torch.nn.Module) -> None:
    sentinel = tmp_path / "code_ran"
    path = tmp_path / "model.pt"
    torch.save({**trained.state_dict(), "payload": _Payload(sentinel)}, path)
    with pytest.raises(ValueError, match=r"weights_only") as err:
        load_weights(_net(seed=2), path)
    assert str(path) in str(err.value)
    assert not sentinel.exists()


def test_whole_pickled_module_is_refused(tmp_path: Path, trained: torch.nn.Module) -> None:
    path = tmp_path / "model.pt"
    torch.save(trained, path)  # the module object, not its state_dict
    with pytest.raises(ValueError, match="weights_only"):
        load_weights(_net(seed=2), path)


@pytest.mark.parametrize("content", [b"not a checkpoint", b"hello", b"", b"PK\x03\x04 truncated zip"])
def test_not_a_torch_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="checkpoint") as err:
        load_weights(_net(), path)
    assert str(path) in str(err.value)


def test_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(ValueError, match="does not hold a state dict"):
        load_weights(_net(), path)


@pytest.mark.parametrize("prefixed", [False, True])
def test_loads_into_data_parallel(tmp_path: Path, trained: torch.nn.Module, prefixed: bool) -> None:
    path = tmp_path / "model.pt"
    state = trained.state_dict()
    torch.save({f"module.{k}": v for k, v in state.items()} if prefixed else state, path)
    wrapped = torch.nn.DataParallel(_net(seed=2))  # on CPU it only wraps; keys "module.conv.weight", ...
    assert load_weights(wrapped, path) is wrapped
    _assert_same_state(wrapped.module, trained)


def test_own_submodule_named_module_round_trips(tmp_path: Path, trained: torch.nn.Module) -> None:
    """The prefix strip must not break a network whose own keys start with ``module.``."""
    source = torch.nn.Sequential(OrderedDict(module=trained, out=torch.nn.Conv2d(2, 1, 1)))
    path = tmp_path / "model.pt"
    torch.save(source.state_dict(), path)
    fresh = torch.nn.Sequential(OrderedDict(module=_net(seed=2), out=torch.nn.Conv2d(2, 1, 1)))
    _assert_same_state(load_weights(fresh, path), source)


def test_usable_from_bundle_config(tmp_path: Path, trained: torch.nn.Module) -> None:
    path = tmp_path / "model.pt"
    torch.save(trained.state_dict(), path)
    parser = ConfigParser(
        {
            "imports": ["$import common", "$import torch"],
            "network": "$torch.nn.Sequential()",
            "ckpt_path": str(path),
            "trained_network": "$common.networks.load_weights(@net, @ckpt_path, 'cpu')",
        }
    )
    parser["net"] = _net(seed=2)
    _assert_same_state(parser.get_parsed_content("trained_network"), trained)
