"""Tests of common.refinement.finetune and .inferer: BIFSeg's image-specific fine-tuning and the bundle inferer."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from common.boxes import SCRIBBLE_BG, SCRIBBLE_FG
from common.networks import DilatedSegNet
from common.refinement.finetune import (
    PRESETS,
    RefinementParams,
    params_from,
    refine,
    weighted_cross_entropy,
)
from common.refinement.inferer import BoxRefinementInferer


def _blob_image(shape: tuple[int, ...] = (32, 40)) -> tuple[np.ndarray, np.ndarray]:
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    inside = sum(g**2 for g in grid) < 0.35
    rng = np.random.default_rng(0)
    image = (inside * 2.0 - 1.0 + rng.normal(0, 0.2, shape)).astype(np.float32)
    return image, inside


def _network(spatial_dims: int = 2) -> DilatedSegNet:
    torch.manual_seed(0)
    return DilatedSegNet(spatial_dims, 1, 2, features=4, compress_channels=2, head_channels=8, dropout=0.0).eval()


def _trained_network(image: np.ndarray, target: np.ndarray, steps: int = 40) -> DilatedSegNet:
    """A network trained briefly on ``target``: confident (p outside the uncertain band) but not perfect."""
    net = _network()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.as_tensor(image)[None, None]
    y = torch.as_tensor(target, dtype=torch.long)[None]
    net.train()
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    return net.eval()


def _features(net: DilatedSegNet, image: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return net.features(torch.as_tensor(image)[None, None])


def test_weighted_cross_entropy_is_eq_11() -> None:
    logits = torch.randn(1, 2, 4, 5)
    target = torch.randint(0, 2, (1, 4, 5))
    weights = torch.rand(1, 4, 5)
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    expected = (ce * weights).sum() / weights.sum()
    torch.testing.assert_close(weighted_cross_entropy(logits, target, weights), expected)
    assert float(weighted_cross_entropy(logits, target, torch.zeros(1, 4, 5))) == 0.0


def test_fine_tuning_changes_only_a_copy_of_block_6_and_lowers_the_loss() -> None:
    image, inside = _blob_image()
    net = _trained_network(image, inside)
    before = copy.deepcopy(net.state_dict())
    features = _features(net, image)
    params = params_from("2d", iterations=30)
    result = refine(features, net.head, image, None, params, mode="bifseg")
    for key, value in net.state_dict().items():  # the network passed in is never modified
        torch.testing.assert_close(value, before[key])
    updates = [h for h in result.history if h["step"].startswith("network")]
    assert len(updates) == params.alternations
    assert all(h["zero_weight_voxels"] < image.size for h in updates)  # confident: something to learn from
    assert all(h["loss_last"] < h["loss_first"] for h in updates)
    assert result.label.shape == image.shape
    assert result.label.dtype == bool


def test_scribbles_are_hard_constraints_in_every_mode() -> None:
    net = _network()
    image, _inside = _blob_image()
    codes = np.zeros(image.shape, np.uint8)
    codes[0:3, 0:3] = SCRIBBLE_FG  # foreground scribble on background
    codes[16, 20] = SCRIBBLE_BG  # background scribble in the blob's centre
    features = _features(net, image)
    for mode in ("cnn", "crf", "bifseg"):
        result = refine(features, net.head, image, codes, params_from("2d", iterations=5), mode=mode)
        assert result.label[0:3, 0:3].all(), mode
        assert not result.label[16, 20], mode


def test_supervised_fine_tuning_learns_from_scribbles() -> None:
    """A network trained on under-segmented labels (confident, too small); scribbles on the blob and the background:
    fine-tuning with the paper's settings must beat the CRF alone (which cannot move the border far)."""
    from scipy import ndimage

    image, inside = _blob_image()
    net = _trained_network(image, ndimage.binary_erosion(inside, iterations=4))
    codes = np.zeros(image.shape, np.uint8)
    codes[14:18, 12:28] = SCRIBBLE_FG
    codes[1:3, :] = SCRIBBLE_BG
    codes[-3:-1, :] = SCRIBBLE_BG
    features = _features(net, image)
    params = params_from("2d", iterations=40, lam=1.0)

    def dice(mask: np.ndarray) -> float:
        return float(2 * (mask & inside).sum() / (mask.sum() + inside.sum()))

    crf = refine(features, net.head, image, codes, params, mode="crf")
    tuned = refine(features, net.head, image, codes, params, mode="bifseg")
    assert dice(tuned.label) > dice(crf.label) + 0.05


def test_same_request_same_result_and_voxel_sampling_option() -> None:
    net = _network()
    image, _ = _blob_image()
    features = _features(net, image)
    a = refine(features, net.head, image, None, params_from("2d", voxels_per_step=200), "bifseg")
    b = refine(features, net.head, image, None, params_from("2d", voxels_per_step=200), "bifseg")
    np.testing.assert_array_equal(a.prob, b.prob)
    full = refine(features, net.head, image, None, params_from("2d", voxels_per_step=None), "bifseg")
    assert full.prob.shape == a.prob.shape


def test_bad_arguments() -> None:
    net = _network()
    image, _ = _blob_image()
    features = _features(net, image)
    with pytest.raises(ValueError, match="mode"):
        refine(features, net.head, image, None, mode="grabcut")
    with pytest.raises(ValueError, match="image shape"):
        refine(features, net.head, image[:-1], None)
    nan = image.copy()
    nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        refine(features, net.head, nan, None)
    with pytest.raises(ValueError, match="preset"):
        params_from("4d")
    with pytest.raises(ValueError, match="voxels_per_step"):
        RefinementParams(voxels_per_step=0)
    assert PRESETS["3d"].lam == 10.0
    assert PRESETS["3d"].t1 == 0.6


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_inferer_under_no_grad_keeps_meta_and_network(spatial_dims: int) -> None:
    """MONAI evaluators and MONAI Label call inferers under no_grad: fine-tuning must still run."""
    from monai.data import MetaTensor

    net = _network(spatial_dims)
    before = copy.deepcopy(net.state_dict())
    shape = (24, 20, 1) if spatial_dims == 2 else (16, 16, 6)
    image = torch.randn(1, 1, *shape)
    codes = torch.zeros(1, 1, *shape)
    codes[0, 0, 10, 10, 0] = SCRIBBLE_FG
    inputs = MetaTensor(torch.cat([image, codes], dim=1), affine=torch.eye(4))
    inferer = BoxRefinementInferer(spatial_dims=spatial_dims, mode="bifseg", params={"iterations": 2})
    with torch.no_grad():
        out = inferer(inputs, net)
    assert out.shape == (1, 1, *shape)
    assert isinstance(out, MetaTensor)
    assert float(out[0, 0, 10, 10, 0]) == 1.0
    assert set(np.unique(out.numpy())) <= {0.0, 1.0}
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key])
    with pytest.raises(ValueError, match=r"\(B, 2, H, W"):
        inferer(torch.zeros(1, 1, *shape), net)
    with pytest.raises(ValueError, match="mode"):
        BoxRefinementInferer(mode="x")


def test_runaway_shrinkage_stops_and_keeps_the_last_stable_label() -> None:
    """Only a background scribble: if an alternation removes more than max_shrink of the foreground, the fine-tuning
    stops and returns the label before that update (never an empty result from self-training)."""
    image, inside = _blob_image()
    net = _trained_network(image, inside)
    codes = np.zeros(image.shape, np.uint8)
    codes[10:22, 18:22] = SCRIBBLE_BG  # a background stroke through the object
    features = _features(net, image)
    strict = refine(features, net.head, image, codes, params_from("2d", max_shrink=1e-6, iterations=30), "bifseg")
    stops = [h for h in strict.history if h["step"].startswith("stopped")]
    assert stops, strict.history
    assert strict.label.sum() == stops[0]["foreground_before"]
    assert strict.label.sum() > 0
    with pytest.raises(ValueError, match="max_shrink"):
        RefinementParams(max_shrink=0.0)
