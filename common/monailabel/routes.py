"""The app's own ``POST /infer/{model}`` route, put in front of MONAI Label's.

MONAI Label 0.8.5's infer endpoint runs the inference inside the server's event loop (so ``/info`` and the training
status wait for it), merges ``params`` over its own request entries (so a ``{"label": "<server path>"}`` replaces the
upload, and an image id may be any file path on the server), answers malformed ``params`` with 500 and leaves
rejected uploads in the temp folder. This route takes the same form fields (what 3D Slicer and OHIF send:
``image`` / ``session_id`` / ``output`` query parameters, the ``params`` JSON field, ``file`` and ``label`` uploads)
and:

- checks ``params`` (:mod:`common.monailabel.params`) before anything runs: malformed JSON, reserved keys, unknown
  result formats ... get 400 with the reason;
- takes the image from the datastore by id only (404 for an unknown id; file paths are refused), from a session
  (``session_id``) or from an uploaded ``file``: the only paths the inference sees are ones the server made;
- keeps uploads in a per-request temp folder removed when the request ends, whatever its outcome (the result file
  is removed after it was sent);
- runs as a plain function, in the server's thread pool: ``/info``, the datastore and the training status answer
  while an inference runs (inferences themselves run one at a time, :meth:`InteractiveSegApp.run_infer`).

This module imports ``monailabel`` (the ``label`` extra).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import BackgroundTasks, Depends, File, Form, HTTPException, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from monailabel.config import settings
from monailabel.datastore.utils.convert import binary_to_image
from monailabel.endpoints.infer import ResultType
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance
from monailabel.utils.others.generic import get_mime_type, remove_file
from requests_toolbelt import MultipartEncoder

from common.monailabel.params import check_params, parse_params

if TYPE_CHECKING:
    from common.monailabel.application import InteractiveSegApp

__all__ = [
    "UPLOAD_SUFFIXES",
    "AddImageRoute",
    "InferRoute",
    "SaveLabelRoute",
    "install_first",
    "save_upload",
    "server_routes",
]

logger = logging.getLogger(__name__)

#: File name endings accepted for uploads: NIfTI, NRRD (3D Slicer), MetaImage, and OHIF's raw ``.bin`` label maps.
UPLOAD_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".mha", ".bin")


# FastAPI reads these from the endpoints' signatures; one object per parameter (FastAPI may set its name on it)
_INFER_PARAMS = Form("{}")
_INFER_FILE = File(None)
_INFER_LABEL = File(None)
_LABEL_PARAMS = Form("{}")
_LABEL_FILE = File(...)
_IMAGE_PARAMS = Form("{}")
_IMAGE_FILE = File(...)
_AS_USER = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))
_AS_ANNOTATOR = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))


def server_routes() -> list[Any] | None:
    """The running MONAI Label server's route list (``None`` outside the server: MONAI Label's background task
    processes never import ``monailabel.app``)."""
    server = sys.modules.get("monailabel.app")
    api = getattr(server, "app", None)
    routes = getattr(getattr(api, "router", None), "routes", None)
    return routes if isinstance(routes, list) else None


def install_first(route: APIRoute, same: Callable[[Any], bool]) -> bool:
    """Put ``route`` first in the server's routes unless a route for which ``same`` holds is there already.

    Returns whether such a route is in place (``False`` outside the server).
    """
    routes = server_routes()
    if routes is None:
        return False
    if not any(same(r) for r in routes):
        routes.insert(0, route)
    return True


def _suffix(name: str | None) -> str:
    lower = (name or "").lower()
    return next((s for s in UPLOAD_SUFFIXES if lower.endswith(s)), "")


def save_upload(upload: UploadFile, folder: Path, stem: str, raw: bool = False) -> Path:
    """Write an uploaded file into ``folder`` as ``<stem><suffix>`` (the suffix kept from the client's file name).

    Args:
        upload: the multipart file.
        folder: the request's temp folder.
        stem: the file's name in ``folder`` (and the upload's name in messages).
        raw: accept OHIF's raw ``.bin`` label maps (label uploads only; images must be image files).

    Raises:
        ValueError: a file name without one of :data:`UPLOAD_SUFFIXES` (e.g. ``.txt``), or an empty file.
    """
    suffix = _suffix(upload.filename)
    if suffix == ".bin" and not raw:
        suffix = ""
    if not suffix:
        raise ValueError(
            f"the uploaded {stem!r} file {upload.filename!r} is not an image file this server reads: send "
            f"{', '.join(UPLOAD_SUFFIXES)}"
        )
    path = folder / f"{stem}{suffix}"
    with path.open("wb") as out:
        shutil.copyfileobj(upload.file, out)
    if path.stat().st_size == 0:
        raise ValueError(f"the uploaded {stem!r} file {upload.filename!r} is empty")
    return path


def _from_binary(image_path: str, upload: Path, folder: Path) -> Path:
    """OHIF's raw ``.bin`` label map (voxels in the image's Fortran order) as a NIfTI file on the image's grid.

    Raises:
        ValueError: the byte count does not match the image's voxel count.
    """
    try:
        converted = binary_to_image(image_path, str(upload))
    except ValueError as err:
        raise ValueError(f"the uploaded .bin label map does not match the image's voxel count: {err}") from err
    return Path(shutil.move(converted, folder / "label_from_bin.nii.gz"))


def _send(result: dict[str, Any], output: ResultType | None, background: BackgroundTasks) -> Any:
    """MONAI Label's response shapes: ``output=image`` the result file, ``json`` its JSON, otherwise (``all`` or no
    ``output``, as 3D Slicer's client asks) both as multipart (``params`` and ``image``)."""
    result_file = result.get("file")
    result_json = result.get("params")
    if isinstance(result_file, str) and os.path.exists(result_file):
        background.add_task(remove_file, result_file)
    else:
        result_file = None
    if output == ResultType.json:
        return result_json
    if output == ResultType.dicom_seg:
        raise HTTPException(status_code=400, detail="output=dicom_seg needs a DICOMweb datastore; this server has none")
    if result_file is None:
        return JSONResponse(result_json)
    if output == ResultType.image:
        return FileResponse(result_file, media_type=get_mime_type(result_file), filename=os.path.basename(result_file))
    with open(result_file, "rb") as handle:
        fields = {
            "params": (None, json.dumps(result_json), "application/json"),
            "image": (os.path.basename(result_file), handle.read(), get_mime_type(result_file)),
        }
    message = MultipartEncoder(fields=fields)
    return Response(content=message.to_string(), media_type=message.content_type)


def _infer_endpoint(
    background_tasks: BackgroundTasks,
    model: str,
    image: str = "",
    session_id: str = "",
    params: str = _INFER_PARAMS,
    file: UploadFile = _INFER_FILE,
    label: UploadFile = _INFER_LABEL,
    output: ResultType | None = None,
    user: User = _AS_USER,
) -> Any:
    """``POST /infer/{model}`` (see the module docstring). A plain function: FastAPI runs it in its thread pool."""
    instance: InteractiveSegApp = app_instance()
    if model not in instance.infer_models():
        raise HTTPException(status_code=404, detail=f"unknown model {model!r}; models: {instance.infer_models()}")
    folder = Path(tempfile.mkdtemp(prefix="isb_request_"))
    result: dict[str, Any] = {}
    try:
        try:
            request: dict[str, Any] = {**check_params(parse_params(params)), "model": model}
            if label is not None:
                request["label"] = str(save_upload(label, folder, "label", raw=True))
            if session_id:
                sessions = instance.sessions()
                session = sessions.get_session(session_id) if sessions else None
                if not session:
                    raise HTTPException(status_code=404, detail=f"unknown or expired session {session_id!r}")
                request["session"] = session.to_json()
                image_path, image_id = str(session.image), None
            elif file is not None:
                image_path, image_id = str(save_upload(file, folder, "image")), None
            elif image:
                image_path, image_id = instance.image_path_of(image), image
            else:
                raise ValueError("no image: give a datastore image id (?image=<id>), a session_id, or upload 'file'")
            if request.get("label", "").endswith(".bin"):
                request["label"] = str(_from_binary(image_path, Path(request["label"]), folder))
        except HTTPException:
            raise  # e.g. the datastore's RejectedError, with its own status
        except ValueError as err:
            raise HTTPException(status_code=400, detail=str(err)) from err
        result = instance.run_infer(request, image_path, image_id)
        return _send(result, output, background_tasks)
    except BaseException:
        stale = result.get("file")
        if isinstance(stale, str) and os.path.exists(stale):
            os.remove(stale)
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class InferRoute(APIRoute):
    """``POST /infer/{model}`` served by :func:`_infer_endpoint`."""

    def __init__(self, prefix: str = "") -> None:
        super().__init__(f"{prefix}/infer/{{model}}", _infer_endpoint, methods=["POST"], include_in_schema=False)


def _save_label_endpoint(
    image: str,
    params: str = _LABEL_PARAMS,
    tag: str = "final",
    label: UploadFile = _LABEL_FILE,
    user: User = _AS_ANNOTATOR,
) -> Any:
    """``PUT /datastore/label``: the user's label for a datastore image, checked by the app's datastore (tag, format,
    grid) before anything is written; the upload is removed whatever the outcome."""
    instance: InteractiveSegApp = app_instance()
    folder = Path(tempfile.mkdtemp(prefix="isb_label_"))
    try:
        try:
            info = parse_params(params)
            image_path = instance.image_path_of(image)
            path = save_upload(label, folder, "label", raw=True)
            if path.name.endswith(".bin"):
                path = _from_binary(image_path, path, folder)
            if user and user.username:
                info["user"] = user.username
            label_id = instance.datastore().save_label(image, str(path), tag or "final", info)
        except HTTPException:
            raise  # e.g. the datastore's RejectedError, with its own status
        except ValueError as err:
            raise HTTPException(status_code=400, detail=str(err)) from err
        result = instance.on_save_label(image, label_id) or {}
        result.update(image=image, label=label_id)
        return result
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _add_image_endpoint(
    image: str | None = None,
    params: str = _IMAGE_PARAMS,
    file: UploadFile = _IMAGE_FILE,
    user: User = _AS_ANNOTATOR,
) -> Any:
    """``PUT /datastore/image``: a new datastore image, checked by the app's datastore (id, readable image); the
    upload is removed whatever the outcome."""
    instance: InteractiveSegApp = app_instance()
    folder = Path(tempfile.mkdtemp(prefix="isb_image_"))
    try:
        try:
            info = parse_params(params)
            name = Path(file.filename or "").name
            suffix = _suffix(name)
            image_id = image or name[: len(name) - len(suffix)]
            path = save_upload(file, folder, "image")
            if user and user.username:
                info["user"] = user.username
            return {"image": instance.datastore().add_image(image_id, str(path), info)}
        except HTTPException:
            raise  # e.g. the datastore's RejectedError, with its own status
        except ValueError as err:
            raise HTTPException(status_code=400, detail=str(err)) from err
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class SaveLabelRoute(APIRoute):
    """``PUT /datastore/label`` served by :func:`_save_label_endpoint`."""

    def __init__(self, prefix: str = "") -> None:
        super().__init__(f"{prefix}/datastore/label", _save_label_endpoint, methods=["PUT"], include_in_schema=False)


class AddImageRoute(APIRoute):
    """``PUT /datastore/image`` served by :func:`_add_image_endpoint`; ``path="/datastore/"`` for the older path that
    3D Slicer's client still uses."""

    def __init__(self, prefix: str = "", path: str = "/datastore/image") -> None:
        super().__init__(f"{prefix}{path}", _add_image_endpoint, methods=["PUT"], include_in_schema=False)
