"""One bundle's inference, as every path runs it: ``preprocessing`` -> ``inferer(network)`` -> ``postprocessing``.

A bundle's ``inference.json`` defines the three parts once. ``monai.bundle run`` runs them through a
``SupervisedEvaluator``; MONAI Label's ``BasicInferTask`` runs them one datalist item at a time (pre-transforms, the
image with a batch dimension through the inferer, item 0 of the output as ``pred``, post-transforms, then its own
writer). :class:`BundleInferencePipeline` is that per-item run for everything else (the robot-user evaluation, the
demo, scripts), so that they run the bundle's own parsed parts and never a second copy of intensity scaling,
orientation, resampling or slicing.

Writers (``SaveImaged``) are left out of the post-processing (:func:`without_writers`): callers get the result in
memory, in the grid of the input image (the bundle's ``Invertd`` puts it there).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose, SaveImage, SaveImaged

__all__ = ["BundleInferencePipeline", "load_bundle_config", "transforms_of", "without_writers"]

logger = logging.getLogger(__name__)

_WRITERS = (SaveImaged, SaveImage)


def load_bundle_config(config_file: str | Path | Sequence[str | Path], bundle_root: str | Path) -> ConfigParser:
    """A parser of a bundle's config file(s) (later files override earlier ones, as with ``monai.bundle run
    --config_file``) with ``bundle_root`` set to the bundle folder, not the working directory.

    Raises:
        FileNotFoundError: a config file that does not exist (named in the message).
    """
    files = [config_file] if isinstance(config_file, str | Path) else list(config_file)
    for f in files:
        if not Path(f).is_file():
            raise FileNotFoundError(f"bundle config not found: {f}")
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser["bundle_root"] = str(bundle_root)
    return parser


def transforms_of(compose: Any) -> list[Callable[..., Any]]:
    """The transforms of a ``Compose`` (or of a plain sequence of transforms) as a list."""
    if isinstance(compose, Compose):
        return list(compose.transforms)
    if isinstance(compose, Sequence) and not isinstance(compose, str | bytes):
        return list(compose)
    if callable(compose):
        return [compose]
    raise ValueError(f"expected a Compose or a sequence of transforms, got {type(compose).__name__}")


def without_writers(compose: Any) -> list[Callable[..., Any]]:
    """The transforms of ``compose`` without the ones that write files (``SaveImaged``, ``SaveImage``)."""
    return [t for t in transforms_of(compose) if not isinstance(t, _WRITERS)]


class BundleInferencePipeline:
    """Run a bundle's inference parts on one datalist item, as MONAI Label's infer task does.

    ``item`` -> ``preprocessing`` -> ``inferer(item["image"][None], network)`` -> ``pred`` = output item 0 ->
    ``postprocessing`` (writers removed), each transform applied in turn as MONAI Label does (so a transform's
    ``ValueError`` reaches the caller unwrapped). The item is what the bundle's ``inference.json`` datalist holds (e.g.
    ``{"image": path, "annotation": path}`` for slice propagation, ``{"image": path, "foreground": [[i, j, k]],
    "background": []}`` for clicks), so the same request gives the same mask here, through ``monai.bundle run`` and
    through the MONAI Label app.

    Args:
        preprocessing: the bundle's ``preprocessing`` (a ``Compose`` or a list of transforms).
        inferer: the bundle's ``inferer`` (``inferer(inputs, network) -> outputs``).
        postprocessing: the bundle's ``postprocessing``; ``SaveImaged`` is dropped.
        network: the network with its weights loaded; switched to eval mode here.
        device: where the network runs (the input is moved there).
        image_key: the datalist key of the network input.
        pred_key: the key the output is stored under before post-processing.

    Example:
        >>> pipeline = BundleInferencePipeline.from_bundle("bundles/slice_propagation")
        >>> out = pipeline({"image": "ct.nii.gz", "annotation": "slices.nii.gz"})
        >>> out["pred"].shape  # (1, H, W, D), the input image's grid
    """

    def __init__(
        self,
        preprocessing: Any,
        inferer: Callable[..., Any],
        postprocessing: Any,
        network: torch.nn.Module,
        device: str | torch.device = "cpu",
        image_key: str = "image",
        pred_key: str = "pred",
    ) -> None:
        self.preprocessing = transforms_of(preprocessing)
        self.inferer = inferer
        self.postprocessing = without_writers(postprocessing)
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.image_key = image_key
        self.pred_key = pred_key

    @classmethod
    def from_bundle(
        cls,
        bundle_root: str | Path,
        weights: str | Path | None = None,
        config_files: Sequence[str | Path] | None = None,
        overrides: Mapping[str, Any] | None = None,
        device: str | torch.device | None = None,
    ) -> BundleInferencePipeline:
        """Parse a bundle's ``configs/inference.json`` and build its pipeline.

        Args:
            bundle_root: the bundle folder.
            weights: a state dict file to load (default: the config's ``ckpt_path``, the shipped
                ``models/model.pt``).
            config_files: config files to read instead of ``configs/inference.json`` (later ones override earlier
                ones, as with ``monai.bundle run --config_file``).
            overrides: ``{config id: value}`` set after reading (e.g. ``{"intensity_mode": "percentile"}``).
            device: where the network runs (default: the config's ``device``).

        Raises:
            FileNotFoundError: no such bundle folder, config or weights file.
        """
        root = Path(bundle_root)
        parser = load_bundle_config(list(config_files or [root / "configs" / "inference.json"]), root)
        for key, value in (overrides or {}).items():
            parser[key] = value
        if device is not None:
            parser["device"] = f"$torch.device({str(torch.device(device))!r})"
        from common.networks.weights import load_weights

        network = parser.get_parsed_content("network_def", instantiate=True)
        run_device = parser.get_parsed_content("device")
        path = Path(weights) if weights is not None else Path(parser.get_parsed_content("ckpt_path"))
        load_weights(network, path, run_device)
        return cls(
            preprocessing=parser.get_parsed_content("preprocessing", instantiate=True),
            inferer=parser.get_parsed_content("inferer", instantiate=True),
            postprocessing=parser.get_parsed_content("postprocessing", instantiate=True),
            network=network,
            device=run_device,
        )

    def preprocess(self, item: Mapping[Any, Any]) -> dict[Any, Any]:
        """The bundle's pre-processing of ``item`` alone (``data[image_key]`` is the network input, no batch dim)."""
        return _run(self.preprocessing, dict(item), "preprocessing")

    def predict(self, data: dict[Any, Any]) -> dict[Any, Any]:
        """The inferer on pre-processed ``data`` (MONAI Label's ``run_inferer``): adds ``data[pred_key]``."""
        inputs = data[self.image_key]
        inputs = inputs if torch.is_tensor(inputs) else torch.as_tensor(inputs)
        with torch.no_grad():
            outputs = self.inferer(inputs[None].to(self.device), self.network)
        data[self.pred_key] = outputs[0]
        return data

    def __call__(self, item: Mapping[Any, Any]) -> dict[Any, Any]:
        """Pre-process ``item``, infer, post-process; returns the post-processed data dict.

        Raises:
            ValueError: whatever the bundle's transforms reject (clicks outside the image, an annotation on another
                grid, a 4-D image, ...), with their messages.
        """
        return _run(self.postprocessing, self.predict(self.preprocess(item)), "postprocessing")


def _run(transforms: Sequence[Callable[..., Any]], data: dict[Any, Any], part: str) -> dict[Any, Any]:
    """Apply ``transforms`` one by one, as MONAI Label's ``run_transforms`` does: a transform's own error (e.g. the
    ``ValueError`` of a click outside the image) reaches the caller as it is, not wrapped by ``Compose``."""
    for transform in transforms:
        data = transform(data)
        if not isinstance(data, dict):
            raise ValueError(f"the bundle's {part} must keep one dict per item, {transform!r} returned {type(data)}")
    return data
