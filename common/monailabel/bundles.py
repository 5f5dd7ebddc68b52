"""Which bundles the MONAI Label app serves, and under which interaction kind.

A bundle is served when its folder holds ``configs/inference.json``, ``configs/metadata.json`` and
``models/model.pt`` and its folder name maps to a registered :class:`~common.monailabel.kinds.InteractionKind`
(:data:`DEFAULT_BUNDLE_KINDS`, extended or overridden by the app's ``--conf kinds`` option). The bundles are read in
place from the repository's ``bundles/`` folder (or ``--conf bundles DIR``); nothing is downloaded or copied.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.monailabel.kinds import InteractionKind, get_kind

__all__ = [
    "DEFAULT_BUNDLE_KINDS",
    "REQUIRED_PARTS",
    "RETRAIN_FROM",
    "ServedBundle",
    "default_bundles_dir",
    "discover_bundles",
    "parse_kinds",
    "parse_names",
]

logger = logging.getLogger(__name__)

#: Bundle folder name -> interaction kind name, for the repository's bundles.
DEFAULT_BUNDLE_KINDS: dict[str, str] = {
    "slice_propagation": "slice_propagation",
    "deepgrow_clicks": "clicks",
    "bifseg": "box_scribbles",
    "active_learning": "box_scribbles",
}

#: Values of ``metadata.json`` ``"monailabel": {"retrain_from": ...}``: where ``/train`` starts. ``"latest"``: the
#: newest weights (the app's trained ones, else the bundle's; also the behaviour without the section);
#: ``"general_weights"``: always the bundle's shipped ``models/model.pt`` (the active-learning loop retrains the
#: general model on the corrected cases, never an earlier retrained model).
RETRAIN_FROM: tuple[str, ...] = ("latest", "general_weights")


@dataclass(frozen=True)
class ServedBundle:
    """A bundle served by the app.

    Attributes:
        name: the model name in MONAI Label (the bundle's folder name).
        root: the bundle folder (absolute).
        kind: how requests become the bundle's datalist items.
    """

    name: str
    root: Path
    kind: InteractionKind

    @property
    def inference_config(self) -> Path:
        """``configs/inference.json``."""
        return self.root / "configs" / "inference.json"

    @property
    def train_config(self) -> Path:
        """``configs/train.json`` (may not exist: the bundle is then served for inference only)."""
        return self.root / "configs" / "train.json"

    @property
    def metadata_file(self) -> Path:
        """``configs/metadata.json``."""
        return self.root / "configs" / "metadata.json"

    @property
    def weights(self) -> Path:
        """The shipped weights, ``models/model.pt`` (a plain ``state_dict``)."""
        return self.root / "models" / "model.pt"

    def metadata(self) -> dict[str, Any]:
        """The parsed ``metadata.json``.

        Raises:
            ValueError: the file is not a JSON object.
        """
        try:
            data = json.loads(self.metadata_file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{self.metadata_file} is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"{self.metadata_file} must hold a JSON object")
        return data

    @property
    def retrain_from(self) -> str | None:
        """``metadata.json`` ``"monailabel": {"retrain_from": ...}`` (one of :data:`RETRAIN_FROM`), ``None`` without it.

        A bundle with this section is an active-learning bundle: the app serves query strategies and scoring methods
        for it (:mod:`common.monailabel.strategies`).

        Raises:
            ValueError: unreadable metadata, a ``monailabel`` entry that is not an object, or an unknown value.
        """
        section = self.metadata().get("monailabel")
        if section is None:
            return None
        if not isinstance(section, dict):
            raise ValueError(f'{self.metadata_file}: "monailabel" must be a JSON object, got {section!r}')
        value = section.get("retrain_from")
        if value is None:
            return None
        if value not in RETRAIN_FROM:
            raise ValueError(
                f'{self.metadata_file}: "monailabel": {{"retrain_from": ...}} must be one of {list(RETRAIN_FROM)}, '
                f"got {value!r}"
            )
        return str(value)


def default_bundles_dir() -> Path:
    """The repository's ``bundles/`` folder next to the installed ``common`` package (editable installs)."""
    import common

    return Path(common.__file__).resolve().parent.parent / "bundles"


def parse_kinds(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """Bundle-to-kind mapping from the ``kinds`` app option.

    Args:
        spec: ``None`` / ``""``, a mapping, a JSON object string ``'{"my_bundle": "clicks"}'`` or the short form
            ``"my_bundle:clicks,other:slice_propagation"``.

    Returns:
        Bundle folder name -> kind name (kinds are checked against the registry).

    Raises:
        ValueError: malformed spec or an unknown kind.
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return {}
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("{"):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"kinds option is not a valid JSON object: {err}") from err
        else:
            parsed = {}
            for part in filter(None, (p.strip() for p in text.split(","))):
                name, sep, kind = part.partition(":")
                if not sep or not name.strip() or not kind.strip():
                    raise ValueError(f"kinds option entry {part!r} must look like bundle_name:kind_name")
                parsed[name.strip()] = kind.strip()
    else:
        parsed = dict(spec)
    if not isinstance(parsed, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()):
        raise ValueError(f"kinds option must map bundle names to kind names, got {spec!r}")
    for kind in parsed.values():
        get_kind(kind)
    return parsed


def parse_names(spec: str | Iterable[str] | None) -> list[str] | None:
    """Bundle names from the ``models`` app option (comma-separated string or list); ``None`` / ``""``: all."""
    if spec is None:
        return None
    names = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else [str(n).strip() for n in spec]
    names = [n for n in names if n]
    return names or None


#: Files a bundle folder needs to be served.
REQUIRED_PARTS: tuple[str, ...] = ("configs/inference.json", "configs/metadata.json", "models/model.pt")


def _missing_parts(root: Path) -> list[str]:
    return [p for p in REQUIRED_PARTS if not (root / p).is_file()]


def discover_bundles(
    bundles_dir: str | Path | None = None,
    kinds: Mapping[str, str] | None = None,
    names: Iterable[str] | None = None,
) -> list[ServedBundle]:
    """The bundles to serve, sorted by name.

    Args:
        bundles_dir: folder holding one folder per bundle; ``None``: :func:`default_bundles_dir`.
        kinds: bundle name -> kind name, on top of :data:`DEFAULT_BUNDLE_KINDS`.
        names: serve exactly these bundles (each must be complete); ``None``: every complete bundle with a kind
            (incomplete ones are skipped with a warning, e.g. a bundle whose weights are not trained yet).

    Raises:
        FileNotFoundError: ``bundles_dir`` does not exist, or a requested bundle is missing or incomplete.
        ValueError: a requested bundle has no kind, an unknown kind is named, or nothing can be served.
    """
    root = Path(bundles_dir) if bundles_dir is not None else default_bundles_dir()
    if not root.is_dir():
        raise FileNotFoundError(
            f"bundles folder {root} does not exist: start the server with --conf bundles /path/to/repo/bundles"
        )
    root = root.resolve()
    mapping = {**DEFAULT_BUNDLE_KINDS, **(dict(kinds) if kinds else {})}
    served: list[ServedBundle] = []
    if names is not None:
        for name in names:
            folder = root / name
            if not folder.is_dir():
                available = sorted(p.name for p in root.iterdir() if (p / "configs").is_dir())
                raise FileNotFoundError(f"no bundle {name!r} in {root}; bundles there: {available}")
            missing = _missing_parts(folder)
            if missing:
                raise FileNotFoundError(f"bundle {name!r} ({folder}) cannot be served: missing {missing}")
            if name not in mapping:
                raise ValueError(
                    f"bundle {name!r} has no interaction kind: pass --conf kinds '{name}:<kind>' "
                    f"(kinds: slice_propagation, clicks, ...)"
                )
            served.append(ServedBundle(name, folder, get_kind(mapping[name])))
    else:
        for folder in sorted(p for p in root.iterdir() if (p / "configs" / "inference.json").is_file()):
            if folder.name not in mapping:
                logger.warning("not serving bundle %s: no interaction kind for it (--conf kinds)", folder.name)
                continue
            missing = _missing_parts(folder)
            if missing:
                logger.warning("not serving bundle %s: missing %s", folder.name, missing)
                continue
            served.append(ServedBundle(folder.name, folder, get_kind(mapping[folder.name])))
    if not served:
        raise ValueError(f"no bundle to serve in {root}: a served bundle needs {list(REQUIRED_PARTS)} and a kind")
    return sorted(served, key=lambda b: b.name)
