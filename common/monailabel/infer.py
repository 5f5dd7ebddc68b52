"""MONAI Label infer task that runs a bundle's ``inference.json`` on a viewer's request.

Like MONAI Label's ``BundleInferTask`` (``monailabel/tasks/infer/bundle.py``), the task takes the bundle's
``preprocessing``, ``inferer``, ``network_def`` and ``postprocessing`` and runs them through MONAI Label's
``BasicInferTask`` (its network cache, device handling, latency report and result writer), dropping the bundle's
``SaveImaged``. What differs:

- the request goes through the bundle's :class:`~common.monailabel.kinds.InteractionKind` first, which adds the
  datalist keys the bundle reads (the uploaded annotation, the clicks) or rejects the request with a message;
- the prediction is written as ``uint8`` in the input image's grid (the bundle's own ``Invertd`` puts it there;
  MONAI Label's ``Restored``, which imports ``torchvision``, is not needed);
- the weights are the bundle's ``models/model.pt`` until the app's training has written newer ones
  (``BasicInferTask`` takes the last existing path and reloads when the file changes).

This module imports ``monailabel`` (the ``label`` extra).
"""

from __future__ import annotations

import itertools
import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.inferers import Inferer
from monai.transforms import LoadImage, LoadImaged, SqueezeDimd
from monailabel.tasks.infer.basic_infer import BasicInferTask

from common.bundle.pipeline import load_bundle_config, transforms_of, without_writers
from common.data.geometry import affine_of
from common.monailabel.bundles import ServedBundle
from common.monailabel.memory import RememberedResult, ResultMemory, memory_key

__all__ = ["BundleInteractionInferTask", "box_key_of", "bundle_labels", "parsed_box"]

logger = logging.getLogger(__name__)

#: request entry holding the result memory key (set by the task itself, never by a client: see ``RESERVED_PARAMS``)
_MEMORY_KEY = "previous_result_key"


def bundle_labels(metadata: dict[str, Any]) -> dict[str, int]:
    """``{structure name: 1}``: the name of the foreground in the bundle's output ``channel_def``.

    The app's tasks return binary masks (1 = the structure the user pointed at), whatever the network's channels.
    """
    outputs = metadata.get("network_data_format", {}).get("outputs", {})
    pred: dict[str, Any] = next(iter(outputs.values()), {}) if isinstance(outputs, dict) else {}
    names = [str(v).lower() for v in pred.get("channel_def", {}).values() if str(v).lower() != "background"]
    return {names[0] if len(names) == 1 else "structure": 1}


def parsed_box(value: Any) -> list[list[int]] | None:
    """``value`` as ``[[start...], [stop...]]`` (2 or 3 ints each, ``start < stop``), else ``None``.

    Recognises the box a bundle's box transform (:class:`common.boxes.BoxMaskd`) leaves in the data after parsing
    the request's box; anything else (a raw ``roi``, malformed values) gives ``None``.
    """
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    start, stop = value
    if not all(isinstance(c, list | tuple) and len(c) in (2, 3) for c in (start, stop)) or len(start) != len(stop):
        return None
    if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in (*start, *stop)):
        return None
    if not all(0 <= a < b for a, b in zip(start, stop, strict=True)):
        return None
    return [[int(v) for v in start], [int(v) for v in stop]]


def box_key_of(transforms: Sequence[Any]) -> str | None:
    """The data key of the box read by the first box transform (one with a ``box_key``, e.g.
    :class:`common.boxes.BoxMaskd`) among ``transforms``; ``None`` when no transform reads a box."""
    for transform in transforms:
        key = getattr(transform, "box_key", None)
        if isinstance(key, str):
            return key
    return None


def _spatial_dims(metadata: dict[str, Any]) -> int:
    inputs = metadata.get("network_data_format", {}).get("inputs", {})
    image: dict[str, Any] = next(iter(inputs.values()), {}) if isinstance(inputs, dict) else {}
    shape = image.get("spatial_shape")
    return len(shape) if isinstance(shape, list) and len(shape) in (2, 3) else 3


class BundleInteractionInferTask(BasicInferTask):
    """Serve one bundle's ``inference.json`` to MONAI Label viewers.

    Every part of the config that names code (``network_def``, ``preprocessing``, ``inferer``, ``postprocessing``) is
    instantiated when the task is built, so a broken bundle fails at server start with the config error rather than
    on the first request.

    Args:
        bundle: the bundle and its interaction kind.
        trained_weights: where the app's training writes this bundle's weights (``.../model.pt``); used instead of
            the bundle's ``models/model.pt`` once it exists.
        preload: load the network on every device at start.

    Raises:
        ValueError / FileNotFoundError: unreadable metadata or config; any error of instantiating the config parts.
    """

    def __init__(self, bundle: ServedBundle, trained_weights: Path, preload: bool = False) -> None:
        metadata = bundle.metadata()
        self.bundle = bundle
        self.trained_weights = Path(trained_weights)
        self.version = str(metadata.get("version", ""))
        self._parser = load_bundle_config(bundle.inference_config, bundle.root)
        network = self._parser.get_parsed_content("network_def", instantiate=True)
        self._preprocessing = self._parser.get_parsed_content("preprocessing", instantiate=True)
        self._inferer = self._parser.get_parsed_content("inferer", instantiate=True)
        self._postprocessing = self._parser.get_parsed_content("postprocessing", instantiate=True)
        #: the data key of the box the bundle's box transform parses (``None``: the bundle takes no box)
        self.box_key: str | None = box_key_of(transforms_of(self._preprocessing))
        #: the last result sent per (model, image, segment), for kinds that remember results
        self.memory = ResultMemory()
        dimension = bundle.kind.dimension or _spatial_dims(metadata)
        super().__init__(
            path=[str(bundle.weights), str(self.trained_weights)],
            network=network,
            type=bundle.kind.infer_type,
            labels=bundle_labels(metadata),
            dimension=dimension,
            description=f"{metadata.get('name', bundle.name)}: {bundle.kind.description}",
            load_strict=True,
            preload=preload,
        )

    def info(self) -> dict[str, Any]:
        """MONAI Label's model info plus the bundle version, interaction kind and the weights in use."""
        info: dict[str, Any] = super().info()
        info.update(version=self.version, kind=self.bundle.kind.name, weights=self.get_path())
        return info

    def pre_transforms(self, data: Any = None) -> Sequence[Callable[..., Any]]:
        """The bundle's ``preprocessing`` transforms (run one by one by MONAI Label)."""
        return transforms_of(self._preprocessing)

    def run_pre_transforms(self, data: dict[str, Any], transforms: Any) -> dict[str, Any]:
        """MONAI Label's pre-processing run, with plain ``image_*`` request entries set aside meanwhile.

        MONAI's ``Spacingd`` updates every ``<key>_*`` entry of the data as a meta-data dict after resampling ``<key>``;
        MONAI Label keeps the image's path as the string ``image_path`` (which its writer needs later), so the
        bundle's resampling would fail on it. Such entries are removed while the transforms run and put back after.
        Loading transforms run on their own, so that an unreadable file becomes a ``ValueError`` (see
        :meth:`_run_pre_group`).

        Raises:
            ValueError: a file the loading transforms cannot read (an upload that is not an image), or any
                ``ValueError`` of the bundle's checks.
        """
        prefix = f"{self.input_key}_"
        aside = {k: data.pop(k) for k in list(data) if str(k).startswith(prefix) and not isinstance(data[k], dict)}
        try:
            out: dict[str, Any] = data
            for loads, group in itertools.groupby(transforms, key=lambda t: isinstance(t, LoadImaged | LoadImage)):
                out = self._run_pre_group(out, list(group), loads)
        finally:
            data.update(aside)
        out.update(aside)
        return out

    def _run_pre_group(self, data: dict[str, Any], transforms: list[Any], loads: bool) -> dict[str, Any]:
        """Run ``transforms``; for loading transforms, a file that cannot be read is the request's error.

        Readers raise many kinds of errors for a file that is not an image (nibabel's ``ImageFileError``, ITK's
        ``RuntimeError``, PIL's ``OSError``, ...): they become a ``ValueError`` naming the files (HTTP 400), e.g. for an
        upload that is not a NIfTI volume although it is named ``.nii.gz``. Errors of other transforms pass unchanged.
        """
        try:
            out: dict[str, Any] = super().run_pre_transforms(data, transforms)
        except (ValueError, FileNotFoundError):
            raise
        except Exception as err:
            if not loads:
                raise
            files = [
                f"{'the image' if key == self.input_key else f'the uploaded {key!r}'} {data[key]}"
                for t in transforms
                for key in getattr(t, "keys", (self.input_key,))
                if isinstance(data.get(key), str)
            ]
            raise ValueError(
                f"cannot read {' or '.join(files) or 'the input'} as an image ({type(err).__name__}: {err}); "
                "uploads must be image files (NIfTI .nii.gz, NRRD, ...) on the image's grid"
            ) from err
        return out

    def inferer(self, data: Any = None) -> Inferer:
        """The bundle's ``inferer``."""
        inferer: Inferer = self._inferer
        return inferer

    def post_transforms(self, data: Any = None) -> Sequence[Callable[..., Any]]:
        """The bundle's ``postprocessing`` without ``SaveImaged``, then the channel dimension dropped for writing."""
        return [*without_writers(self._postprocessing), SqueezeDimd(keys=self.output_label_key, dim=0)]

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[Any, Any]:
        """MONAI Label's writer with a ``uint8`` mask (unless the request asks for ``result_dtype``).

        For a bundle with a box transform (:attr:`box_key`), the result JSON also holds ``box``: the box the bundle
        used, ``[[start...], [stop...]]`` voxel indices of the image as stored (stop exclusive), as the bundle's box
        transform parsed (and clipped) the request's ``roi`` / ``box``; the app stores it in the datastore.
        """
        result_file, result_json = super().writer(
            data, extension=extension, dtype=dtype or data.get("result_dtype") or np.uint8
        )
        key = data.get(_MEMORY_KEY)
        if key is not None:
            self.remember(key, data)
        box = parsed_box(data.get(self.box_key)) if self.box_key else None
        if box is not None and isinstance(result_json, dict):
            result_json["box"] = box
        return result_file, result_json

    def remember(self, key: tuple[str, str, str], data: dict[str, Any]) -> None:
        """Remember the result in ``data`` (written for the viewer) with the user's slices of the request."""
        pred = data[self.output_label_key]
        mask = np.asarray(pred.detach().cpu() if hasattr(pred, "detach") else pred) > 0
        affine = affine_of(pred)
        axis = data.get("slice_axis")
        if mask.ndim != 3 or affine is None or not isinstance(axis, int):
            self.memory.forget(key)
            return
        user = tuple(int(s) for s in data.get("user_slices", ()))
        self.memory.put(key, RememberedResult(mask, affine, axis, user))

    def __call__(self, request: dict[str, Any], callbacks: Any = None) -> tuple[Any, dict[str, Any]]:
        """Build the kind's datalist keys from ``request`` and run the bundle.

        For a kind that remembers results (:attr:`InteractionKind.remembers_result`), the result last sent for this
        image and segment is passed to the kind (unless the request says ``reset_state``) and the new one remembered.

        Raises:
            ValueError / FileNotFoundError: the request lacks what the kind or the bundle's checks need (the
                app answers these with HTTP 400).
        """
        request = dict(request)
        key = memory_key(self.bundle.name, request) if self.bundle.kind.remembers_result else None
        if key is not None:
            request["previous_result"] = None if request.get("reset_state") else self.memory.get(key)
            request[_MEMORY_KEY] = key
        with tempfile.TemporaryDirectory(prefix="isb_request_") as workdir:
            item = self.bundle.kind.build_item(request, Path(workdir))
            result_file, result_json = super().__call__({**request, **item}, callbacks)
        result_json.update(bundle=self.bundle.name, kind=self.bundle.kind.name, weights=self.get_path())
        return result_file, result_json
