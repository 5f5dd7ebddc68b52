"""MONAI Label server benchmark: this repository's app as a real server, side by side with MONAI Label's sample app.

Every figure comes from HTTP requests to servers started by the benchmark on 127.0.0.1 (each in its own process
group with its own ``TMPDIR``, stopped with SIGTERM, then SIGKILL: :mod:`common.monailabel.server`; only the thread
comparison runs several at once), on one case of a phantom dataset (default ``data/Phantoms``; the last case, left
unlabelled in the studies folder, is the image of every inference):

1. **request latency** of ``POST /infer/<model>?image=<case>`` as 3D Slicer sends it: the ``params`` JSON of the
   recorded Slicer requests (``tests/common/monailabel/requests/``), no ``output`` query (the answer is multipart:
   result JSON and ``.nrrd`` file), timed until the whole answer is read. ``slice_propagation`` gets Slicer's
   scribbles body with the uploaded label map Slicer exports (every segment; ``liver`` and ``kidney_right`` each
   painted on their middle slice from the ground truth; ``selected_label_name`` ``kidney_right``); ``deepgrow_clicks``
   gets Slicer's 2D DeepGrow body (2 foreground clicks inside the liver on its middle slice, ``slice`` = that slice).
   ``--clients`` closed-loop clients (default 1 and 16) share ``--requests`` requests per setting (each client sends
   its next request when the previous one is answered); after ``--warmup`` untimed requests per model (the first
   loads the network: its latency is reported as ``cold_s``). Reported: n, mean, p50, p95, max, requests per second;
2. **``GET /info/`` latency while ``--info-queued`` (16) inference requests are queued**: the requests are sent at
   once and ``/info/`` is asked every 0.2 s until they are all answered, against ``/info/`` on the idle server. This
   app runs inferences in the server's thread pool, one at a time (``common.monailabel.routes``); MONAI Label 0.8.5's
   own ``/infer`` endpoint runs them inside the event loop, so there ``/info/`` waits behind them;
3. **one training epoch** of ``slice_propagation`` with 3D Slicer's default train settings: Slicer's
   ``getParamsFromConfig`` sends the first value of each option of the trainer's ``/info/`` ``config`` (plus its
   ``client_id``); here with ``max_epochs`` 1. Timed from ``POST /train/<model>`` until ``GET /train/`` (polled every
   0.25 s) reports the task finished; the trainer's own ``train_stats`` (``total_time``: the epoch and validation
   inside the training process) are reported beside it;
4. **threads**: the 1-client latency of both models on servers started side by side with ``--conf threads N``: the
   default (half the usable cores), 1 and all usable cores (settings that resolve to the same number are measured
   once), interleaved (one request to each server in turn), so that load from other processes affects them alike;
5. **the baseline**, in the same run and on the same image: MONAI Label's sample app ``radiology`` (copied offline
   from the installed package with ``monailabel apps --download``) serving ``deepgrow_2d`` (``--conf models
   deepgrow_2d --conf use_pretrained_model false --conf sam2 false``: untrained ``BasicUNet`` weights, as costly as
   trained ones), answering Slicer's same 2D DeepGrow body, with the same clients and the same ``/info/`` probe. It
   runs with torch's default thread count (it has no thread option). Two things of this environment are worked
   around, and recorded in the JSON:

   - PyPI's ``torchvision`` is built against CUDA torch: beside the CPU torch its ``_C`` library does not load and
     ``import torchvision`` fails with ``operator torchvision::nms does not exist`` (the sample app imports
     ``torchvision.utils`` through ``monailabel.transform.post``). The baseline server then gets a
     ``sitecustomize.py`` (on its ``PYTHONPATH`` only) that declares the two operator schemas torchvision's import
     registers fake kernels for (``nms``, ``qnms``); no torchvision operator runs in DeepGrow 2D;
   - MONAI 1.6's ``Spacingd`` updates every ``image_*`` entry of the data with the image's metadata for NIfTI
     files, and MONAI Label 0.8.5 puts the string ``image_path`` there (``AttributeError: 'str' object has no
     attribute 'update'``, answered 500): the baseline's studies folder holds the same image as a compressed
     ``.nrrd`` (same voxels and geometry; loading times of both files are reported).

   The sample app's 3D ``segmentation`` model is not measured: in a trial, one request had not been answered after
   5 minutes on the 2-core CPU (sliding window of 96^3 patches over the image resampled to 1.5 mm).

Order: our app's latency rows, ``/info/`` probe, thread comparison and training on one server, then the baseline.
``--tiny`` generates 5 phantoms of 64 x 64 x 40 voxels (the test suite's); ``--skip`` leaves parts out;
``--train-overrides`` changes Slicer's train params (e.g. a quicker epoch for tests). Each server's start-up time
(process start to the first ``/info/`` answer) is reported apart; the servers' logs stay in ``--workdir`` when given
(a temporary folder otherwise).

The servers run without the caller's ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``, so that each server's own thread
setting applies. Needs the ``label`` extra (``monailabel``). Run from the repository root::

    .venv-label/bin/python bench/label_server.py --out bench/results_label_server_cpu_<date>.json
    .venv-label/bin/python bench/label_server.py --tiny --requests 4 --clients 1 4 --info-queued 4   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: ``common`` from the repository
    sys.path.insert(0, str(ROOT))

from common.monailabel.server import (  # noqa: E402 (after the path set-up above)
    ServerProcess,
    download_sample_app,
    free_port,
    server_env,
    start_server,
    start_server_command,
    stop_server,
    torchvision_import_error,
    write_torchvision_shim,
)

__all__ = [
    "InferRequest",
    "ServerProcess",
    "case_requests",
    "compare_threads",
    "download_sample_app",
    "free_port",
    "info_under_load",
    "latency_summary",
    "main",
    "measure_latency",
    "resolve_threads",
    "slicer_train_params",
    "start_app_server",
    "start_sample_server",
    "start_server",
    "stop_server",
    "torchvision_import_error",
    "train_one_epoch",
    "write_torchvision_shim",
]

APP_DIR = ROOT / "common" / "monailabel" / "app"
BUNDLES = ROOT / "bundles"
DEFAULT_DATA = ROOT / "data" / "Phantoms"
REQUESTS_DIR = ROOT / "tests" / "common" / "monailabel" / "requests"
SAMPLE_APP = "radiology"
SAMPLE_MODEL = "deepgrow_2d"
MODELS = ("slice_propagation", "deepgrow_clicks")
TRAIN_MODEL = "slice_propagation"
TINY_SHAPE = (64, 64, 40)
TINY_CASES = 5
START_TIMEOUT_S = 240.0
REQUEST_TIMEOUT_S = 900.0
ACTIVE = ("SUBMITTED", "QUEUED", "RUNNING")
PARTS = ("threads", "info", "train", "baseline")
SLICER_CLIENT_ID = "user-xyz"  # 3D Slicer's default client id (MONAILabel/clientId setting)


# ----------------------------------------------------------------------------------------------------- servers
def _http() -> Any:
    """The ``requests`` module (imported when first needed)."""
    import requests  # type: ignore[import-untyped, unused-ignore]

    return requests


def _shape(path: Path) -> tuple[int, ...]:
    import nibabel as nib

    image: Any = nib.load(str(path))
    return tuple(int(s) for s in image.shape)


def _pythonpath(first: Path | None) -> str:
    """``first`` (if any), then this process's ``PYTHONPATH``."""
    return os.pathsep.join(filter(None, [str(first) if first is not None else None, os.environ.get("PYTHONPATH")]))


def start_app_server(
    studies: Path, workdir: Path, conf: Sequence[tuple[str, str]] = (), device: str = "cpu"
) -> ServerProcess:
    """This repository's app (``common/monailabel/app/main.py`` copied into ``workdir/app``, bundles from
    ``bundles/``) on ``studies``, with extra ``--conf KEY VALUE`` pairs."""
    app = workdir / "app"
    app.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(APP_DIR / "main.py", app / "main.py")
    command = start_server_command(app, studies, [("bundles", str(BUNDLES)), *conf])
    env = server_env(device, {"PYTHONPATH": _pythonpath(ROOT)})
    return start_server("app", command, workdir, env, START_TIMEOUT_S)


def start_sample_server(
    app: Path,
    studies: Path,
    workdir: Path,
    models: str = SAMPLE_MODEL,
    shim: Path | None = None,
    device: str = "cpu",
) -> ServerProcess:
    """MONAI Label's sample app ``app`` serving ``models`` without pretrained weights (and without SAM 2), with the
    torchvision shim folder ``shim`` (:func:`~common.monailabel.server.write_torchvision_shim`) first on its
    ``PYTHONPATH``."""
    conf = [("models", models), ("use_pretrained_model", "false"), ("sam2", "false")]
    command = start_server_command(app, studies, conf)
    env = server_env(device, {"PYTHONPATH": _pythonpath(shim)})
    return start_server(f"sample app {app.name}", command, workdir, env, START_TIMEOUT_S)


def server_threads(server: ServerProcess) -> int | None:
    """The torch thread count the app logged at start (``None`` when not found: the sample app logs none)."""
    marker = " torch threads per inference"
    for line in server.log.read_text(errors="replace").splitlines():
        if marker in line:
            return int(line.split(marker)[0].rsplit(" ", 1)[-1])
    return None


# ---------------------------------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class InferRequest:
    """One ``POST /infer/<model>?image=<image>`` as 3D Slicer sends it: the ``params`` form field and an optional
    ``label`` upload ``(file name, bytes)``; no ``output`` query (multipart answer)."""

    model: str
    image: str
    params: dict[str, Any]
    upload: tuple[str, bytes] | None = None

    def send(self, url: str, timeout_s: float = REQUEST_TIMEOUT_S) -> tuple[float, int, str]:
        """Send it to the server at ``url`` and read the whole answer: ``(seconds, status, detail)`` where
        ``detail`` is the content type of a 200 answer, else the start of the body."""
        requests = _http()
        files = {"label": (self.upload[0], self.upload[1], "application/octet-stream")} if self.upload else None
        start = time.perf_counter()
        try:
            response = requests.post(
                f"{url}/infer/{self.model}",
                params={"image": self.image},
                files=files,
                data={"params": json.dumps(self.params)},
                timeout=timeout_s,
            )
            body = response.content
        except requests.RequestException as err:
            return time.perf_counter() - start, 0, f"{type(err).__name__}: {err}"
        seconds = time.perf_counter() - start
        if response.status_code == 200:
            return seconds, 200, f"{response.headers.get('content-type', '').split(';')[0]} {len(body)} bytes"
        return seconds, response.status_code, body[:500].decode(errors="replace")


def _recorded(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((REQUESTS_DIR / f"{name}.json").read_text())
    return loaded


def _middle_slice(mask: np.ndarray) -> int:
    slices = np.flatnonzero(mask.any(axis=(0, 1)))
    if slices.size == 0:
        raise ValueError("the structure is not in the case's ground truth")
    return int(slices[slices.size // 2])


def case_requests(dataset: Path, case: str, device: str = "cpu") -> dict[str, InferRequest]:
    """Slicer's request bodies for ``case`` of the MSD dataset ``dataset``, built from the recorded requests.

    ``slice_propagation``: the scribbles body of ``slicer_scribbles_slice_propagation.json`` and the label map Slicer
    exports (uint8 NIfTI on the image's grid, value = segment id): each segment with a ground-truth ``structure``
    painted on that structure's middle slice (stored axis 2); ``deepgrow_clicks``: the body of
    ``slicer_deepgrow_2d.json`` with 2 foreground clicks ``[i, j, k]`` (voxel indices as stored) inside its structure on
    its middle slice ``k`` and ``slice`` = ``k``; ``deepgrow_2d`` (the sample app): the same body. ``device`` is
    written into every body (Slicer sends the first of the model's ``/info/`` ``device`` options).

    Raises:
        ValueError: a structure of the recorded requests is missing from the case's ground truth.
    """
    import nibabel as nib

    image: Any = nib.load(str(dataset / "labelsTr" / f"{case}.nii.gz"))
    truth = np.asarray(image.dataobj)
    scribbles = _recorded("slicer_scribbles_slice_propagation")
    volume = np.zeros(truth.shape, dtype=np.uint8)
    for segment in scribbles["upload"]["segments"]:
        if segment.get("structure") is not None:
            structure = truth == segment["structure"]
            k = _middle_slice(structure)
            volume[..., k][structure[..., k]] = segment["id"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / scribbles["upload"]["file_name"]
        nib.save(nib.Nifti1Image(volume, image.affine), str(path))
        upload = (path.name, path.read_bytes())
    propagation = InferRequest("slice_propagation", case, {**scribbles["params"], "device": device}, upload)

    clicks = _recorded("slicer_deepgrow_2d")
    structure = truth == clicks["structure"]
    k = _middle_slice(structure)
    inside = np.argwhere(structure[..., k])
    points = [[int(i), int(j), k] for i, j in (inside[inside.shape[0] // 2], inside[inside.shape[0] // 3])]
    params = {**clicks["params"], "foreground": points, "background": [], "slice": k, "device": device}
    return {
        "slice_propagation": propagation,
        "deepgrow_clicks": InferRequest("deepgrow_clicks", case, params),
        SAMPLE_MODEL: InferRequest(SAMPLE_MODEL, case, dict(params)),
    }


# ----------------------------------------------------------------------------------------------------- timing
def latency_summary(seconds: Sequence[float]) -> dict[str, Any]:
    """``n``, ``mean_s``, ``p50_s``, ``p95_s`` (linear interpolation), ``min_s``, ``max_s`` of ``seconds``."""
    values = np.asarray(seconds, dtype=np.float64)
    if values.size == 0:
        return {"n": 0}
    return {
        "n": int(values.size),
        "mean_s": float(values.mean()),
        "p50_s": float(np.percentile(values, 50)),
        "p95_s": float(np.percentile(values, 95)),
        "min_s": float(values.min()),
        "max_s": float(values.max()),
    }


def _check_answers(answers: Sequence[tuple[float, int, str]], what: str, server: ServerProcess | None) -> None:
    failed = [a for a in answers if a[1] != 200]
    if failed:
        tail = f"\n{server.log_tail(3000)}" if server is not None else ""
        raise RuntimeError(f"{len(failed)} of {len(answers)} {what} failed, e.g. {failed[0][1]}: {failed[0][2]}{tail}")


def measure_latency(
    url: str, request: InferRequest, n: int, clients: int, server: ServerProcess | None = None
) -> dict[str, Any]:
    """``n`` requests (at least ``clients``) sent by ``clients`` closed-loop clients: each sends its next request when
    its previous one is answered, until ``n`` were sent. Returns :func:`latency_summary` plus ``clients``,
    ``wall_s`` and ``requests_per_s``.

    Raises:
        RuntimeError: a request was not answered 200 (with the server's log tail when ``server`` is given).
    """
    n = max(n, clients)
    remaining = [n]
    lock = threading.Lock()
    answers: list[tuple[float, int, str]] = []

    def client() -> None:
        while True:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            answer = request.send(url)
            with lock:
                answers.append(answer)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    _check_answers(answers, f"{request.model} requests", server)
    summary = latency_summary([a[0] for a in answers])
    summary.update(clients=clients, wall_s=wall, requests_per_s=n / wall, answer=answers[0][2])
    return summary


def _get_seconds(url: str, path: str) -> float:
    requests = _http()
    start = time.perf_counter()
    response = requests.get(f"{url}{path}", timeout=REQUEST_TIMEOUT_S)
    response.raise_for_status()
    return time.perf_counter() - start


def info_under_load(
    url: str,
    request: InferRequest,
    queued: int,
    idle_probes: int = 5,
    interval_s: float = 0.2,
    server: ServerProcess | None = None,
) -> dict[str, Any]:
    """``GET /info/`` latency on the idle server (``idle_probes`` probes) and while ``queued`` copies of ``request``,
    sent at once, are waiting or running (a probe every ``interval_s`` after the previous answer, from the moment
    the requests are sent until the last is answered). Returns ``idle``, ``under_load`` (:func:`latency_summary`)
    and ``inference`` (the queued requests' latencies).

    Raises:
        RuntimeError: an inference request was not answered 200.
    """
    idle = [_get_seconds(url, "/info/") for _ in range(idle_probes)]
    answers: list[tuple[float, int, str]] = []
    lock = threading.Lock()

    def one() -> None:
        answer = request.send(url)
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(queued)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    probes: list[float] = []
    time.sleep(interval_s)
    while any(t.is_alive() for t in threads):
        probes.append(_get_seconds(url, "/info/"))
        time.sleep(interval_s)
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    _check_answers(answers, f"queued {request.model} requests", server)
    return {
        "model": request.model,
        "queued": queued,
        "wall_s": wall,
        "idle": latency_summary(idle),
        "under_load": latency_summary(probes),
        "inference": latency_summary([a[0] for a in answers]),
    }


def slicer_train_params(info: Mapping[str, Any], model: str) -> dict[str, Any]:
    """What 3D Slicer's ``getParamsFromConfig("train", model)`` sends: the trainer's ``/info/`` ``config`` with the
    first value of each list option, plus its ``client_id``.

    Raises:
        KeyError: the server has no trainer ``model``.
    """
    config = info["trainers"][model].get("config", {})
    params = {k: v[0] if isinstance(v, list) else v for k, v in config.items()}
    params["client_id"] = SLICER_CLIENT_ID
    return params


def train_one_epoch(
    url: str,
    model: str,
    overrides: Mapping[str, Any] | None = None,
    timeout_s: float = 1800.0,
    poll_s: float = 0.25,
    server: ServerProcess | None = None,
) -> dict[str, Any]:
    """``POST /train/<model>`` with Slicer's default params (:func:`slicer_train_params`) updated with ``overrides``
    (default ``{"max_epochs": 1}``), then ``GET /train/`` every ``poll_s`` until the task is no longer
    submitted/queued/running. Returns the params, ``seconds`` (request to the end of the task), the task's status
    and the trainer's ``train_stats`` from ``/info/`` afterwards.

    Raises:
        RuntimeError: the request was refused, the task did not end ``DONE``, or ``timeout_s`` passed.
    """
    requests = _http()
    info = requests.get(f"{url}/info/", timeout=60).json()
    params = slicer_train_params(info, model)
    params.update(overrides if overrides is not None else {"max_epochs": 1})
    start = time.perf_counter()
    response = requests.post(f"{url}/train/{model}", json=params, timeout=60)
    if response.status_code != 200:
        raise RuntimeError(f"POST /train/{model} answered {response.status_code}: {response.text[:1000]}")
    status: dict[str, Any] = {}
    while time.perf_counter() - start < timeout_s:
        status = requests.get(f"{url}/train/", timeout=60).json()
        if status.get("status") not in ACTIVE:
            break
        time.sleep(poll_s)
    seconds = time.perf_counter() - start
    if status.get("status") != "DONE":
        details = "\n".join(status.get("details", []))[-3000:]
        tail = server.log_tail(3000) if server is not None else ""
        raise RuntimeError(
            f"training of {model} ended {status.get('status')!r} after {seconds:.0f} s:\n{details}{tail}"
        )
    stats = requests.get(f"{url}/info/", timeout=60).json().get("train_stats", {}).get(model, {})
    return {
        "model": model,
        "params": params,
        "seconds": seconds,
        "status": status.get("status"),
        "train_stats_total_time_s": _seconds_of(stats.get("total_time")),
        "train_stats": {k: stats.get(k) for k in ("epoch", "total_epochs", "total_time", "best_metric")},
    }


def _seconds_of(value: Any) -> float | None:
    """MONAI Label's ``total_time`` (``"0:01:23.456"`` or seconds) in seconds."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.count(":") == 2:
        hours, minutes, seconds = value.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return None


def _load_seconds(paths: Sequence[Path], repeats: int = 5) -> dict[str, float]:
    """Median seconds of MONAI's ``LoadImage`` on each file (the image loading the two servers do differently)."""
    from monai.transforms import LoadImage

    load = LoadImage(image_only=True)
    out: dict[str, float] = {}
    for path in paths:
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            load(str(path))
            times.append(time.perf_counter() - start)
        out[path.name] = float(np.median(times[1:]))
    return out


# -------------------------------------------------------------------------------------------------------- runs
def _warm(url: str, request: InferRequest, warmup: int, server: ServerProcess) -> float | None:
    cold = None
    for i in range(warmup):
        answer = request.send(url)
        _check_answers([answer], f"warm-up {request.model} request", server)
        if i == 0:
            cold = answer[0]
    return cold


def resolve_threads(settings: Sequence[str]) -> dict[int, list[str]]:
    """The thread count of each ``--threads`` setting on this machine (``default``: the app's default, half the
    usable cores; ``all``: the usable cores; else the number), grouped: ``{threads: [settings]}`` in the order
    given (settings that resolve to the same count are measured once)."""
    from common.monailabel.application import parse_threads, usable_cores

    resolved: dict[int, list[str]] = {}
    for setting in settings:
        threads = parse_threads(None) if setting == "default" else usable_cores() if setting == "all" else int(setting)
        resolved.setdefault(threads, []).append(setting)
    return resolved


def _start_threads_server(
    args: argparse.Namespace, studies: Path, workdir: Path, threads: int, settings: Sequence[str]
) -> ServerProcess:
    conf = [] if list(settings) == ["default"] else [("threads", str(threads))]
    print(f"\nour app, threads {'='.join(settings)} ({threads}): starting the server ...", flush=True)
    server = start_app_server(studies, workdir / f"app_threads_{threads}", conf, args.device)
    logged = server_threads(server)
    if logged != threads:
        stop_server(server)
        raise RuntimeError(f"the server logged {logged} torch threads, expected {threads}")
    return server


def compare_threads(
    servers: Sequence[tuple[ServerProcess, int, Sequence[str]]],
    requests_: Mapping[str, InferRequest],
    n: int,
    warmup: int,
) -> list[dict[str, Any]]:
    """1-client latency of each model on ``servers`` (``(server, threads, settings)``), interleaved: round ``i``
    sends one request to each server in turn (rotating which goes first), so that load from other processes
    affects them alike. Returns one entry per server: ``settings``, ``threads``, ``start_s`` and per model a
    :func:`latency_summary` with ``first_s``, the untimed first request of the comparison (for a server started for
    it: the one that loads the network)."""
    entries: list[dict[str, Any]] = [
        {"settings": list(st), "threads": t, "start_s": sv.start_s, "latency": {}} for sv, t, st in servers
    ]
    for model in MODELS:
        firsts = [_warm(sv.url, requests_[model], warmup, sv) for sv, _, _ in servers]
        times: list[list[float]] = [[] for _ in servers]
        for i in range(n):
            for k in range(len(servers)):
                j = (i + k) % len(servers)
                answer = requests_[model].send(servers[j][0].url)
                _check_answers([answer], f"{model} request", servers[j][0])
                times[j].append(answer[0])
        for entry, first, seconds in zip(entries, firsts, times, strict=True):
            entry["latency"][model] = {**latency_summary(seconds), "first_s": first}
    return entries


def run_app(
    args: argparse.Namespace, studies: Path, requests_: Mapping[str, InferRequest], workdir: Path
) -> dict[str, Any]:
    """Our app on a server with the first ``--threads`` setting: the latency rows, the ``/info/`` probe, then (with
    servers for the other thread counts started beside it) :func:`compare_threads`, then the training."""
    from common.monailabel.application import usable_cores

    cores = usable_cores()
    groups = list(resolve_threads(args.threads).items())
    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {"rows": rows, "threads": [], "cores": cores}
    threads, settings = groups[0]
    server = _start_threads_server(args, studies, workdir, threads, settings)
    try:
        entry: dict[str, Any] = {"settings": settings, "threads": threads, "start_s": server.start_s, "latency": {}}
        for model in MODELS:
            cold = _warm(server.url, requests_[model], args.warmup, server)
            for clients in args.clients:
                row = measure_latency(server.url, requests_[model], args.requests, clients, server)
                row.update(server="ours", model=model, threads=threads, threads_setting="=".join(settings), cold_s=cold)
                print(_row_line(row), flush=True)
                rows.append(row)
                if clients == 1:
                    entry["latency"][model] = row
        out["threads"] = [entry]
        if "info" not in args.skip:
            out["info"] = info_under_load(server.url, requests_[TRAIN_MODEL], args.info_queued, server=server)
            print(_info_line("ours", out["info"]), flush=True)
        if "threads" not in args.skip and len(groups) > 1:
            others: list[tuple[ServerProcess, int, Sequence[str]]] = []
            try:
                for other_threads, other_settings in groups[1:]:
                    other = _start_threads_server(args, studies, workdir, other_threads, other_settings)
                    others.append((other, other_threads, other_settings))
                print("1-client latency by thread count, interleaved ...", flush=True)
                out["threads"] = compare_threads(
                    [(server, threads, settings), *others], requests_, args.requests, args.warmup
                )
                out["threads_interleaved"] = True
            finally:
                for other, _, _ in others:
                    stop_server(other)
        if "train" not in args.skip:
            print(f"our app: one epoch of {TRAIN_MODEL} with Slicer's train settings ...", flush=True)
            overrides = {"max_epochs": 1, **args.train_overrides}
            out["train"] = train_one_epoch(server.url, TRAIN_MODEL, overrides, server=server)
            print(_train_line(out["train"]), flush=True)
    finally:
        stop_server(server)
    return out


def run_baseline(args: argparse.Namespace, studies_image: Path, request: InferRequest, workdir: Path) -> dict[str, Any]:
    """MONAI Label's sample app (see the module docstring): the same latency settings and ``/info/`` probe."""
    out: dict[str, Any] = {"app": SAMPLE_APP, "model": SAMPLE_MODEL, "workarounds": [], "rows": []}
    app = download_sample_app(workdir / "apps", SAMPLE_APP)
    env = server_env(args.device)
    out["torch_threads"], error = torchvision_import_error(env)
    shim = None
    if error is not None:
        if "torchvision::nms does not exist" not in error:
            out["skipped"] = f"import torchvision fails: {error}"
            return out
        shim = write_torchvision_shim(workdir / "shim")
        out["torch_threads"], still = torchvision_import_error(dict(env, PYTHONPATH=str(shim)))
        if still is not None:
            out["skipped"] = f"import torchvision fails ({error}), also with the operator schemas declared: {still}"
            return out
        out["workarounds"].append(
            f"import torchvision failed ({error}): PyPI's torchvision is built against CUDA torch and its _C library "
            "does not load beside the CPU torch; the server got a sitecustomize.py declaring the torchvision::nms "
            "and ::qnms schemas"
        )
    studies = workdir / "studies_nrrd"
    studies.mkdir(parents=True, exist_ok=True)
    nrrd = studies / f"{request.image}.nrrd"
    import itk

    itk.imwrite(itk.imread(str(studies_image)), str(nrrd), compression=True)
    out["workarounds"].append(
        "the image is served as a compressed .nrrd: with NIfTI files MONAI 1.6's Spacingd updates MONAI Label "
        "0.8.5's 'image_path' string with the image metadata (AttributeError, answered 500)"
    )
    out["image_load_s"] = _load_seconds([studies_image, nrrd])
    print(f"\nsample app {SAMPLE_APP} ({SAMPLE_MODEL}): starting the server ...", flush=True)
    server = start_sample_server(app, studies, workdir / "sample_server", shim=shim, device=args.device)
    out["start_s"] = server.start_s
    try:
        cold = _warm(server.url, request, args.warmup, server)
        for clients in args.clients:
            row = measure_latency(server.url, request, args.requests, clients, server)
            row.update(server=f"{SAMPLE_APP} sample app", model=SAMPLE_MODEL, threads=out["torch_threads"], cold_s=cold)
            print(_row_line(row), flush=True)
            out["rows"].append(row)
        if "info" not in args.skip:
            out["info"] = info_under_load(server.url, request, args.info_queued, server=server)
            print(_info_line(f"{SAMPLE_APP} sample app", out["info"]), flush=True)
    finally:
        stop_server(server)
    return out


# ------------------------------------------------------------------------------------------------------ output
def _row_line(row: Mapping[str, Any]) -> str:
    return (
        f"{row['server']:<24}{row['model']:<19}{row['threads']!s:>8}{row['clients']:>8}{row['n']:>5}"
        f"{row['mean_s']:>9.3f}{row['p50_s']:>9.3f}{row['p95_s']:>9.3f}{row['max_s']:>9.3f}{row['requests_per_s']:>8.2f}"
    )


def _row_header() -> str:
    return (
        f"{'server':<24}{'model':<19}{'threads':>8}{'clients':>8}{'n':>5}{'mean s':>9}{'p50 s':>9}{'p95 s':>9}"
        f"{'max s':>9}{'req/s':>8}"
    )


def _info_line(name: str, info: Mapping[str, Any]) -> str:
    idle, load = info["idle"], info["under_load"]
    if load["n"] == 0:
        return f"{name:<24}/info/: idle p50 {idle['p50_s']:.3f} s; no probe while queued"
    return (
        f"{name:<24}/info/ p50 / p95 / max: idle {idle['p50_s']:.3f} / {idle['p95_s']:.3f} / {idle['max_s']:.3f} s; "
        f"{info['queued']} {info['model']} queued ({load['n']} probes over {info['wall_s']:.1f} s): "
        f"{load['p50_s']:.3f} / {load['p95_s']:.3f} / {load['max_s']:.3f} s"
    )


def _train_line(train: Mapping[str, Any]) -> str:
    inside = train.get("train_stats_total_time_s")
    inside_text = f"{inside:.1f} s" if inside is not None else "-"
    return (
        f"one epoch of {train['model']} ({train['status']}): {train['seconds']:.1f} s from the request to the end of "
        f"the task; train_stats total_time {inside_text}"
    )


def print_report(report: Mapping[str, Any]) -> None:
    """The tables: latency side by side with the baseline, threads, ``/info/`` under load, training."""
    ours, base = report["app"], report.get("baseline") or {}
    print(f"\nPOST /infer latency, Slicer's bodies, image {report['case']} {report['shape']}, {report['device']}")
    print(_row_header())
    for clients in report["settings"]["clients"]:
        for row in [*ours["rows"], *base.get("rows", [])]:
            if row["clients"] == clients:
                print(_row_line(row))
    if base.get("skipped"):
        print(f"baseline not measured: {base['skipped']}")
    for note in base.get("workarounds", []):
        print(f"baseline workaround: {note}")
    if len(ours["threads"]) > 1:
        print("\n1-client latency by --conf threads, interleaved (p50 / p95 s)")
        for entry in ours["threads"]:
            cells = [
                f"{m} {entry['latency'][m]['p50_s']:.3f} / {entry['latency'][m]['p95_s']:.3f}"
                for m in MODELS
                if m in entry["latency"]
            ]
            print(f"  threads {'='.join(entry['settings'])} ({entry['threads']}): " + "; ".join(cells))
    if "info" in ours:
        print("\nGET /info/ while inference requests are queued")
        print(_info_line("ours", ours["info"]))
        if "info" in base:
            print(_info_line(f"{SAMPLE_APP} sample app", base["info"]))
    if "train" in ours:
        print("\nTraining (3D Slicer's default train settings, max_epochs 1)")
        print(_train_line(ours["train"]))


def _dataset(args: argparse.Namespace, workdir: Path) -> Path:
    if args.data is not None:
        return Path(args.data)
    from common.data.phantoms import generate_dataset

    if args.tiny:
        out = workdir / "Phantoms"
        generate_dataset(out, n_cases=TINY_CASES, seed=0, shape=TINY_SHAPE)
        return out
    if not (DEFAULT_DATA / "dataset.json").is_file():
        out = workdir / "Phantoms"
        generate_dataset(out, n_cases=12, seed=0)
        return out
    return DEFAULT_DATA


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The whole benchmark in ``workdir``; returns the report."""

    from common.benchmarking import run_environment
    from common.monailabel.studies import prepare_studies

    dataset = _dataset(args, workdir)
    summary = prepare_studies(dataset, workdir / "studies", unlabelled=1)
    case = args.case or summary.images[-1]
    if case not in summary.images:
        raise ValueError(f"case {case!r} is not in {dataset}: {summary.images}")
    image_file = workdir / "studies" / f"{case}.nii.gz"
    requests_ = case_requests(dataset, case, args.device)
    import torch

    report: dict[str, Any] = {
        "environment": run_environment("label_server", torch.device(args.device), torch.get_num_threads(), False),
        "note": args.note,
        "dataset": str(dataset),
        "case": case,
        "shape": "x".join(str(s) for s in _shape(image_file)),
        "device": args.device,
        "settings": {
            "requests": args.requests,
            "clients": args.clients,
            "warmup": args.warmup,
            "info_queued": args.info_queued,
            "threads": args.threads,
            "skip": args.skip,
            "train_overrides": args.train_overrides,
        },
        "requests": {
            k: {"params": r.params, "upload": r.upload[0] if r.upload else None} for k, r in requests_.items()
        },
        "load_average_start": list(os.getloadavg()),
    }
    started = time.perf_counter()
    report["app"] = run_app(args, workdir / "studies", requests_, workdir)
    if "baseline" not in args.skip:
        try:
            report["baseline"] = run_baseline(args, image_file, requests_[SAMPLE_MODEL], workdir / "baseline")
        except RuntimeError as err:  # the sample app could not run here: keep our figures, say why
            report["baseline"] = {"app": SAMPLE_APP, "skipped": str(err)[-3000:]}
    report["seconds"] = time.perf_counter() - started
    report["load_average_end"] = list(os.getloadavg())
    return report


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point; returns the report (also written to ``--out``)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="'cpu' hides the GPUs from the servers (default cpu)")
    parser.add_argument("--data", type=Path, default=None, help=f"MSD-layout dataset (default {DEFAULT_DATA})")
    parser.add_argument("--tiny", action="store_true", help="generate 5 phantoms of 64x64x40 instead (quick)")
    parser.add_argument("--case", default=None, help="image of the inferences (default: the last case, unlabelled)")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per setting (default 20)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16], help="concurrent clients (default 1 16)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed requests per model and server (default 1)")
    parser.add_argument("--info-queued", type=int, default=16, help="inference requests queued for the /info probe")
    parser.add_argument(
        "--threads", nargs="+", default=["default", "1", "all"], help="--conf threads settings: default, all, or N"
    )
    parser.add_argument(
        "--train-overrides",
        type=json.loads,
        default={},
        help="JSON object updating Slicer's train params besides max_epochs 1 (default none; e.g. a quicker epoch)",
    )
    parser.add_argument("--skip", nargs="*", choices=PARTS, default=[], help="parts to leave out")
    parser.add_argument("--workdir", type=Path, default=None, help="keep servers' folders and logs here")
    parser.add_argument("--note", default="", help="stored in the JSON (e.g. what else ran on the machine)")
    parser.add_argument("--out", type=Path, default=None, help="write the report (JSON) here")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.warmup < 1 or args.info_queued < 1 or min(args.clients) < 1:
        parser.error("--requests, --warmup, --info-queued and --clients must be positive")
    if not isinstance(args.train_overrides, dict):
        parser.error("--train-overrides must be a JSON object")
    for setting in args.threads:
        if setting not in ("default", "all") and not (setting.isdigit() and int(setting) > 0):
            parser.error(f"--threads takes default, all or a positive integer, got {setting!r}")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = run(args, args.workdir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="label_server_bench_") as tmp:
            report = run(args, Path(tmp))
    print_report(report)
    print(f"\n{report['seconds']:.0f} s; load average {report['load_average_start']} -> {report['load_average_end']}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
