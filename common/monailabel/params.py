"""What a viewer may put in an inference request's ``params``, checked before anything runs.

MONAI Label merges the ``params`` JSON form field over its own request entries (``image``, the uploaded ``label``
path, ...), so a client could replace the image or the upload with any path on the server, or steer the result
writer. The app's ``/infer`` route parses ``params`` with :func:`parse_params` and checks it with
:func:`check_params` first; every problem is a ``ValueError`` whose message says what is wrong (HTTP 400).

What viewers really send (3D Slicer's ``MONAILabel.py`` and OHIF v3's ``MonaiLabelClient.js``):

- ``label``: 3D Slicer's name of the current segment (``params["label"] = segment.GetName()``), *not* a file: it
  becomes ``label_name``; the uploaded label file stays the ``label`` the bundle reads;
- ``foreground`` / ``background``: clicks, voxel indices ``[i, j, k]`` of the image as stored; ``slice``: the stored
  ``k`` of the current point for 2D models; ``roi``: ``[i0, i1, j0, j1, k0, k1]``;
- ``label_info`` (``[{"name", "id"}]``, one per exported segment) and ``selected_label_name`` with a scribbles upload;
- ``result_extension`` (``.nrrd``), ``result_dtype`` (``uint8``), ``result_compress``, ``restore_label_idx``,
  ``reset_state``, ``device`` (the first of ``/info``'s list).

Anything else is passed on unchanged (bundle options such as ``label_value``), except the keys of
:data:`RESERVED_PARAMS`, which only the server sets.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "DEFAULT_SAVE_TAG",
    "FINAL_TAG",
    "MAX_PARAMS_BYTES",
    "RESERVED_PARAMS",
    "RESULT_DTYPES",
    "RESULT_EXTENSIONS",
    "check_label_tag",
    "check_params",
    "parse_params",
]

#: Request entries only the server sets: paths (``image``, ``image_path``, ``file``, ``model_filename``), the
#: session, MONAI Label's internal switches, and the app's own entries (``previous_result``).
RESERVED_PARAMS: frozenset[str] = frozenset(
    {
        "image",
        "image_path",
        "file",
        "model",
        "model_filename",
        "session",
        "session_id",
        "description",
        "skip_writer",
        "cache_transforms",
        "cache_transforms_in_memory",
        "cache_transforms_ttl",
        "annotations",
        "location",
        "size",
        "labels",
        "latencies",
        "previous_result",
        "previous_result_key",
        "user_slices",
        "empty_slices",
        "slice_axis",
        "label_name",
    }
)
#: Result file formats the writer may produce.
RESULT_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd")
#: Result voxel types.
RESULT_DTYPES: tuple[str, ...] = ("uint8", "int8", "uint16", "int16", "int32", "float32")
#: The tag of the user's finished labels: only the user's own ``PUT /datastore/label`` writes it.
FINAL_TAG = "final"
#: The tag an inference saves under when it asks for ``save_label`` without a tag (MONAI Label's default).
DEFAULT_SAVE_TAG = "original"
#: Largest ``params`` field accepted (a click list for a whole volume is a few kB).
MAX_PARAMS_BYTES = 4 * 1024 * 1024

_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DEVICE = re.compile(r"^(cpu|cuda(:\d{1,2})?)$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off", "")


def _reject_constant(name: str) -> float:
    raise ValueError(f"params must be plain JSON: {name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"params holds the number {text}, which is out of range (not a finite 64-bit float)")
    return value


def parse_params(text: str | bytes | None) -> dict[str, Any]:
    """The ``params`` form field as a dict.

    Args:
        text: the field as sent (``None`` or empty: no params).

    Raises:
        ValueError: not UTF-8, larger than :data:`MAX_PARAMS_BYTES`, not JSON, ``NaN`` / ``Infinity`` or a number
            beyond float range (``1e400``), or JSON that is not an object (e.g. an array).
    """
    if text is None:
        return {}
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"params must be UTF-8 JSON text: {err}") from None
    if len(text) > MAX_PARAMS_BYTES:
        raise ValueError(f"params is {len(text)} characters long; at most {MAX_PARAMS_BYTES} are accepted")
    if not text.strip():
        return {}
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as err:
        raise ValueError(f"params is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    if not isinstance(value, dict):
        raise ValueError(f'params must be a JSON object {{"key": value, ...}}, got a JSON {_json_type(value)}')
    return value


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _flag(name: str, value: Any) -> bool:
    """A boolean option as JSON ``true``/``false`` or the strings viewers send (``"true"``, ``"0"``, ...)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{name} must be true or false, got {value!r}")


def _index(name: str, value: Any) -> int:
    """A non-negative integer index (a JSON integer, or a float / digit string with an integer value)."""
    number: Any = value
    if isinstance(value, str) and re.fullmatch(r"\s*\d{1,9}\s*", value):
        number = int(value)
    if isinstance(number, float) and number.is_integer():
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise ValueError(f"{name} must be a non-negative integer index (a stored slice index), got {value!r}")
    return number


def check_label_tag(tag: Any, *, allow_final: bool = True) -> str:
    """``tag`` if it is a valid datastore label tag: letters, digits, ``.``, ``_`` and ``-``, at most 64 characters.

    Tags name folders of the studies folder, so no path separator, leading dot or ``..`` may appear.

    Args:
        tag: the tag as sent.
        allow_final: whether :data:`FINAL_TAG` is accepted (inferences never write it).

    Raises:
        ValueError: not such a string, or ``final`` where it is not allowed.
    """
    if not isinstance(tag, str) or not _TAG.fullmatch(tag) or ".." in tag:
        raise ValueError(
            f"label tag {tag!r} is not allowed: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (no path separators, no '..')"
        )
    if not allow_final and tag == FINAL_TAG:
        raise ValueError(
            f"an inference may not save its result as the {FINAL_TAG!r} label (the user's finished label); "
            f"use another label_tag, e.g. {DEFAULT_SAVE_TAG!r}"
        )
    return tag


def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A checked copy of ``params``, ready to merge into the request.

    Besides the checks, 3D Slicer's ``label`` (a segment name) is renamed ``label_name``, and ``slice`` becomes an
    int. ``save_label`` without ``label_tag`` saves under :data:`DEFAULT_SAVE_TAG`.

    Raises:
        ValueError: a reserved key, a ``label`` that is not a name, a result format or type outside
            :data:`RESULT_EXTENSIONS` / :data:`RESULT_DTYPES`, an unknown device or log level, a bad ``slice``,
            ``timeout`` or flag, or ``save_label`` with the ``final`` tag (or a malformed tag).
    """
    reserved = sorted(k for k in params if k in RESERVED_PARAMS)
    if reserved:
        raise ValueError(
            f"params may not set {reserved}: the server sets these itself (the image comes from the image id in "
            "the URL, uploads from the multipart files)"
        )
    out = dict(params)
    if "label" in out:
        name = out.pop("label")
        if name is not None:
            if not isinstance(name, str) or len(name) > 256:
                raise ValueError(
                    f"params 'label' is the name of the viewer's segment (a string of at most 256 characters), got "
                    f"{name!r}; label volumes are uploaded as the multipart file 'label'"
                )
            out["label_name"] = name
    if "result_extension" in out and out["result_extension"] not in (None, *RESULT_EXTENSIONS):
        raise ValueError(f"result_extension must be one of {list(RESULT_EXTENSIONS)}, got {out['result_extension']!r}")
    if "result_dtype" in out and out["result_dtype"] not in (None, *RESULT_DTYPES):
        raise ValueError(f"result_dtype must be one of {list(RESULT_DTYPES)}, got {out['result_dtype']!r}")
    for flag in ("result_compress", "save_label", "restore_label_idx", "reset_state"):
        if flag in out:
            out[flag] = _flag(flag, out[flag])
    if "device" in out:
        device = out["device"]
        if isinstance(device, list) and device:
            device = device[0]
        if not isinstance(device, str) or not _DEVICE.fullmatch(device):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:<n>', got {out['device']!r}")
        out["device"] = device
    if "logging" in out and (not isinstance(out["logging"], str) or out["logging"].upper() not in _LOG_LEVELS):
        raise ValueError(f"logging must be one of {list(_LOG_LEVELS)}, got {out['logging']!r}")
    if "slice" in out and out["slice"] is not None:
        out["slice"] = _index("slice", out["slice"])
    if "timeout" in out:
        timeout = out["timeout"]
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 3600:
            raise ValueError(f"timeout must be a number of seconds in (0, 3600], got {timeout!r}")
    if out.get("save_label"):
        out["label_tag"] = check_label_tag(out.get("label_tag") or DEFAULT_SAVE_TAG, allow_final=False)
    elif "label_tag" in out:
        out.pop("label_tag")  # only read with save_label; never used to name a folder otherwise
    return out
