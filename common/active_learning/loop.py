"""The active-learning loop (Groff 2018): correct cases one by one, retrain from the general weights every ``n``.

One loop, for a pool of cases of one (usually unseen) structure and a fixed held-out set:

1. the current model (round 0: the bundle's general model) scores every case left in the pool with a query
   strategy (:mod:`common.active_learning.strategies`) inside the box the user draws for it, and the best one is
   annotated next;
2. the simulated annotator corrects it through the bundle's own inference pipeline (``inference.json``: box, then
   ``scribble_rounds`` rounds of robot scribbles with CRF and image-specific fine-tuning; interactions are
   counted) or, with ``annotator="ground_truth"``, hands in the ground truth (to study strategies without
   interaction cost);
3. the corrected mask is saved as the case's label (never overwritten) and the state is written;
4. after every ``n_per_round`` corrected cases, and when the pool is exhausted, a new model is trained on all
   corrected cases with the bundle's ``train.json`` recipe (:func:`common.active_learning.retrain.retrain`) from
   the general weights (``transfer=True``, the slides' "transfer learning") or from scratch, and scored on the
   held-out cases from their box (Dice);
5. the next case is corrected with the new model.

Everything is on disk after every case and every retraining (:mod:`common.active_learning.state`): an interrupted
loop resumes where it stopped and, with the same seed, ends in the same state as an uninterrupted one. Cases that
cannot be read or have no usable label are skipped with the reason logged and recorded; the loop goes on.

Cases are the per-structure sample dicts of :func:`common.data.expand_structures` (``{"image", "label",
"case_id", "structure", "structure_name", "group"}``); the label is the ground truth the simulated user knows.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from tqdm.auto import tqdm

from common.active_learning.report import write_report
from common.active_learning.retrain import retrain_model
from common.active_learning.state import LoopState, write_json_atomic
from common.active_learning.strategies import STRATEGIES, score_cases
from common.bundle.pipeline import BundleInferencePipeline, load_bundle_config
from common.evaluation.bundle_adapter import BundleAdapter
from common.evaluation.cases import EvalCase, load_eval_cases
from common.evaluation.loop import run_interactive_evaluation
from common.interaction.scribble_robot import BoxScribbleRobot
from common.interaction.state import InteractionState

__all__ = ["ANNOTATORS", "ActiveLearningLoop", "LoopSettings", "case_key", "split_pool"]

logger = logging.getLogger(__name__)

#: ``robot``: box then scribbles through the bundle (the slides' flow); ``ground_truth``: the label as is.
ANNOTATORS: tuple[str, ...] = ("robot", "ground_truth")
KIND = "box_scribbles"


def case_key(sample: Mapping[str, Any]) -> str:
    """A file-name-safe key of one case and structure, e.g. ``"phantom_003-kidney_right"``."""
    name = str(sample.get("structure_name") or sample.get("structure"))
    raw = f"{sample.get('case_id')}-{name}"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in raw)


def split_pool(
    samples: Sequence[Mapping[str, Any]], n_heldout: int, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split ``samples`` into ``(pool, heldout)`` with ``n_heldout`` held-out cases drawn with ``seed``.

    Raises:
        ValueError: ``n_heldout`` not in ``1..len(samples) - 1``.
    """
    if not 1 <= n_heldout < len(samples):
        raise ValueError(f"n_heldout must be in 1..{len(samples) - 1} for {len(samples)} cases, got {n_heldout}")
    order = np.random.default_rng(seed).permutation(len(samples))
    held = sorted(int(i) for i in order[:n_heldout])
    return [dict(s) for i, s in enumerate(samples) if i not in held], [dict(samples[i]) for i in held]


@dataclass(frozen=True)
class LoopSettings:
    """Settings of one loop (stored in its state; a resumed loop must have the same ones).

    Args:
        strategy: query strategy (one of :data:`~common.active_learning.strategies.STRATEGIES`).
        n_per_round: corrected cases between two retrainings.
        transfer: retrain from the general weights (``True``) or from scratch.
        seed: seed of the loop (strategy draws, box margins, retraining).
        annotator: one of :data:`ANNOTATORS`.
        scribble_rounds: robot rounds after the box (each: one foreground and one background stroke at most).
        retrain_iterations: optimizer steps per retraining.
        samples: samples of the MC-dropout and test-time-augmentation strategies.
        heldout_mode: refinement of the held-out evaluation from the box: ``"cnn"`` (the model alone) or ``"crf"``.
        box_margin: the simulated user's in-plane box margin range in voxels, ``slice_margin`` along the slices.
    """

    strategy: str = "entropy"
    n_per_round: int = 2
    transfer: bool = True
    seed: int = 0
    annotator: str = "robot"
    scribble_rounds: int = 3
    retrain_iterations: int = 60
    samples: int = 10
    heldout_mode: str = "cnn"
    box_margin: tuple[int, int] = (0, 10)
    slice_margin: tuple[int, int] = (0, 2)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; strategies: {', '.join(STRATEGIES)}")
        if self.annotator not in ANNOTATORS:
            raise ValueError(f"unknown annotator {self.annotator!r}; annotators: {', '.join(ANNOTATORS)}")
        if self.heldout_mode not in ("cnn", "crf"):
            raise ValueError(f"heldout_mode must be 'cnn' or 'crf', got {self.heldout_mode!r}")
        for name in ("n_per_round", "retrain_iterations", "samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if (
            isinstance(self.scribble_rounds, bool)
            or not isinstance(self.scribble_rounds, int)
            or self.scribble_rounds < 0
        ):
            raise ValueError(f"scribble_rounds must be an int >= 0, got {self.scribble_rounds!r}")
        object.__setattr__(self, "box_margin", tuple(int(v) for v in self.box_margin))
        object.__setattr__(self, "slice_margin", tuple(int(v) for v in self.slice_margin))

    def to_json(self) -> dict[str, Any]:
        """JSON form (tuples as lists), as stored in the state."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class _LastPrediction:
    """Adapter wrapper that keeps the last mask it returned (the annotator's final, corrected result)."""

    def __init__(self, adapter: BundleAdapter) -> None:
        self.adapter = adapter
        self.last: np.ndarray | None = None

    def __call__(self, image: np.ndarray, state: InteractionState, case: Any) -> np.ndarray:
        self.last = self.adapter(image, state, case)
        return self.last


class ActiveLearningLoop:
    """Run (or resume) one active-learning loop; see the module docstring.

    Args:
        bundle_root: the active-learning bundle (``configs/inference.json`` and ``configs/train.json``).
        pool: the unlabelled cases (per-structure sample dicts); their labels are the simulated user's knowledge.
        heldout: cases scored after every retraining (never annotated, never trained on).
        state_dir: where the state, labels, models and report go (resumed when it holds a state).
        settings: :class:`LoopSettings` (or a mapping of its fields).
        general_weights: the general model (default: the inference config's ``ckpt_path``).
        inference_overrides / train_overrides: ``{config id: value}`` for ``inference.json`` / ``train.json`` (e.g. a
            smaller network in tests; both must describe the same network).
        device: where the networks run (default: the configs' ``device``).
        progress: show progress bars.

    Raises:
        ValueError: an empty pool, an empty held-out set, ``n_per_round`` larger than the pool, a case in both
            sets, or a state in ``state_dir`` written with other settings or another pool.
    """

    def __init__(
        self,
        bundle_root: str | Path,
        pool: Sequence[Mapping[str, Any]],
        heldout: Sequence[Mapping[str, Any]],
        state_dir: str | Path,
        settings: LoopSettings | Mapping[str, Any] | None = None,
        general_weights: str | Path | None = None,
        inference_overrides: Mapping[str, Any] | None = None,
        train_overrides: Mapping[str, Any] | None = None,
        device: str | torch.device | None = None,
        progress: bool = True,
    ) -> None:
        self.settings = settings if isinstance(settings, LoopSettings) else LoopSettings(**dict(settings or {}))
        self.bundle_root = Path(bundle_root)
        if not pool:
            raise ValueError("the pool is empty: give at least one unlabelled case to annotate")
        if not heldout:
            raise ValueError("the held-out set is empty: the loop scores every model on held-out cases")
        self.pool = {case_key(s): dict(s) for s in pool}
        self.heldout = [dict(s) for s in heldout]
        if len(self.pool) != len(pool):
            raise ValueError("the pool lists a case (case_id, structure) twice")
        both = set(self.pool) & {case_key(s) for s in heldout}
        if both:
            raise ValueError(f"cases in both the pool and the held-out set: {sorted(both)}")
        if self.settings.n_per_round > len(self.pool):
            raise ValueError(
                f"n_per_round={self.settings.n_per_round} is larger than the pool of {len(self.pool)} cases: the "
                "loop would never retrain; lower n_per_round or add cases"
            )
        self.state_dir = Path(state_dir)
        self.inference_overrides = dict(inference_overrides or {})
        self.train_overrides = dict(train_overrides or {})
        self.device = device
        self.progress = progress
        self.general_weights = Path(general_weights) if general_weights is not None else self._default_weights()
        if not self.general_weights.is_file():
            raise FileNotFoundError(f"general model weights not found: {self.general_weights}")
        self._cases: dict[str, EvalCase] = {}
        self._inputs: dict[str, torch.Tensor] = {}
        self._pipelines: dict[tuple[str, str], BundleInferencePipeline] = {}

    # ----------------------------------------------------------------------------------------------------------------
    # files

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    def label_file(self, key: str) -> Path:
        return self.state_dir / "labels" / f"{key}.nii.gz"

    def record_file(self, key: str) -> Path:
        return self.state_dir / "labels" / f"{key}.json"

    def _default_weights(self) -> Path:
        parser = load_bundle_config(self.bundle_root / "configs" / "inference.json", self.bundle_root)
        for key, value in self.inference_overrides.items():
            parser[key] = value
        return Path(parser.get_parsed_content("ckpt_path"))

    # ----------------------------------------------------------------------------------------------------------------
    # parts

    def robot(self) -> BoxScribbleRobot:
        """The simulated user (re-seeded per case: a case always gets the same box)."""
        return BoxScribbleRobot(
            margin=self.settings.box_margin, slice_margin=self.settings.slice_margin, seed=self.settings.seed
        )

    def pipeline(self, weights: str | Path, refinement: str) -> BundleInferencePipeline:
        """The bundle's inference pipeline with ``weights`` and ``refinement`` (cached per pair)."""
        key = (str(weights), refinement)
        if key not in self._pipelines:
            overrides = {**self.inference_overrides, "refinement": refinement}
            self._pipelines.clear()  # one model at a time in memory
            self._pipelines[key] = BundleInferencePipeline.from_bundle(
                self.bundle_root, weights=weights, overrides=overrides, device=self.device
            )
        return self._pipelines[key]

    def case(self, key: str) -> EvalCase:
        """The loaded case ``key`` of the pool (cached). Raises ``ValueError``/``FileNotFoundError`` if unusable."""
        if key not in self._cases:
            self._cases[key] = next(load_eval_cases([self.pool[key]]))
        return self._cases[key]

    def box_state(self, case: EvalCase) -> InteractionState:
        """The user's box for ``case`` (the robot's first interaction)."""
        robot = self.robot()
        robot.reset(case.image, case.label, case.spacing, affine=case.affine)
        state = robot.next_interaction(case.label, np.zeros(case.label.shape, np.uint8), InteractionState())
        if state is None:  # the robot always draws a box on a non-empty label
            raise ValueError(f"case {case.case_id}: the simulated user drew no box")
        return state

    # ----------------------------------------------------------------------------------------------------------------
    # the loop

    def _load_state(self) -> LoopState:
        settings = self.settings.to_json()
        pool = list(self.pool)
        if self.state_file.is_file():
            state = LoopState.load(self.state_file)
            if state.settings != settings:
                raise ValueError(
                    f"{self.state_file} was written by a loop with other settings ({state.settings}); resume with "
                    "the same settings or use another state_dir"
                )
            if state.pool != pool:
                raise ValueError(f"{self.state_file} was written for another pool of cases; use another state_dir")
            logger.info(
                "resuming: %d annotated, %d skipped, %d models",
                len(state.annotated),
                len(state.skipped),
                len(state.models),
            )
            return state
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return LoopState.new(settings, pool, self.settings.seed)

    def _save(self, state: LoopState) -> None:
        state.save(self.state_file)

    def current_weights(self, state: LoopState) -> Path:
        """The newest model's weights (the general model before the first retraining)."""
        return Path(state.models[-1]["weights"]) if state.models else self.general_weights

    def evaluate_heldout(self, weights: str | Path) -> dict[str, Any]:
        """Dice of the model ``weights`` on the held-out cases from the user's box (``heldout_mode``)."""
        adapter = BundleAdapter(self.pipeline(weights, self.settings.heldout_mode), KIND, name="heldout")
        result = run_interactive_evaluation(
            load_eval_cases(self.heldout), adapter, self.robot(), n_rounds=1, method="heldout", progress=False
        )
        per_case = {f"{r.case_id}-{r.structure_name}": float(r.dice) for r in result.records}
        values = list(per_case.values())
        return {"mean_dice": float(np.mean(values)), "std_dice": float(np.std(values)), "per_case": per_case}

    def _skip(self, state: LoopState, key: str, reason: str) -> None:
        logger.warning("skipping case %s: %s", key, reason)
        state.skipped.append({"key": key, "reason": reason})
        state.remaining.remove(key)
        self._save(state)

    def _usable(self, state: LoopState) -> list[str]:
        """Remaining keys whose case loads (the others are skipped with their reason)."""
        usable = []
        for key in list(state.remaining):
            try:
                self.case(key)
            except (ValueError, FileNotFoundError, OSError) as err:
                self._skip(state, key, str(err))
                continue
            usable.append(key)
        return usable

    def select(self, state: LoopState, keys: list[str], rng: np.random.Generator) -> tuple[str, float]:
        """The strategy's pick among ``keys`` (pool order) and its score."""
        seed = int(rng.integers(2**31 - 1))  # drawn for every strategy: the RNG stream does not depend on it
        strategy = self.settings.strategy
        network = None
        inputs: list[torch.Tensor] = []
        if strategy in ("entropy", "mc_dropout", "tta"):
            pipeline = self.pipeline(self.current_weights(state), "cnn")
            adapter = BundleAdapter(pipeline, KIND, name="strategy")
            network = pipeline.network
            for key in keys:
                if key not in self._inputs:  # the box crop does not depend on the weights: pre-processed once
                    case = self.case(key)
                    x = adapter.network_input(case.image, self.box_state(case), case.info)
                    self._inputs[key] = x[:, :1]  # channel 0: the crop (1: scribble codes, none yet)
                inputs.append(self._inputs[key].to(pipeline.device))
        else:
            inputs = [torch.zeros(1, 1, 1, 1, 1) for _ in keys]  # order- or draw-based: inputs are not looked at
        scores = score_cases(strategy, network, inputs, seed=seed, samples=self.settings.samples)
        best = int(np.argmax(scores))  # the first of equal scores: pool order
        return keys[best], float(scores[best])

    def annotate(self, state: LoopState, key: str, score: float) -> None:
        """Correct case ``key`` with the current model, save its label and record, update ``state``."""
        case = self.case(key)
        label_path, record_path = self.label_file(key), self.record_file(key)
        if label_path.exists():
            raise FileExistsError(
                f"{label_path} exists but the loop state does not list it: refusing to overwrite a label"
            )
        weights = self.current_weights(state)
        start = time.perf_counter()
        record: dict[str, Any] = {
            "key": key,
            "order": len(state.annotated) + 1,
            "strategy": self.settings.strategy,
            "score": score,
            "model_round": int(state.models[-1]["round"]) if state.models else 0,
            "label": str(label_path),
        }
        if self.settings.annotator == "ground_truth":
            mask = case.label.astype(bool)
            record.update({"dice_per_round": [1.0], "interactions": 0, "scribbled_voxels": 0, "rounds": 0})
        else:
            capture = _LastPrediction(BundleAdapter(self.pipeline(weights, "bifseg"), KIND, name="annotator"))
            result = run_interactive_evaluation(
                [case],
                capture,
                self.robot(),
                n_rounds=1 + self.settings.scribble_rounds,
                method="annotator",
                progress=False,
            )
            if capture.last is None:
                raise ValueError(f"case {key}: the annotator produced no segmentation")
            mask = capture.last
            done = result.interactions[0]["state"]
            used = [r for r in result.records if not r.carried]
            record.update(
                {
                    "dice_per_round": [float(r.dice) for r in result.records],
                    "interactions": int(done["n_interactions"]),
                    "scribbled_voxels": int(done["scribbles_fg_voxels"] + done["scribbles_bg_voxels"]),
                    "rounds": len(used),
                }
            )
        record["final_dice"] = float(record["dice_per_round"][-1])
        record["seconds"] = time.perf_counter() - start
        write_json_atomic(record, record_path)  # the record first: a label with a record is complete
        partial = label_path.with_name(label_path.name + ".partial.nii.gz")
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), case.affine), str(partial))
        partial.replace(label_path)
        self._adopt(state, record)

    def _adopt(self, state: LoopState, record: dict[str, Any]) -> None:
        state.annotated.append(record)
        state.remaining.remove(record["key"])
        self._save(state)

    def _recover(self, state: LoopState) -> None:
        """Adopt labels written before an interruption that ``state.json`` does not list yet."""
        for key in list(state.remaining):
            if self.label_file(key).is_file() and self.record_file(key).is_file():
                record = json.loads(self.record_file(key).read_text())
                logger.info("adopting the label of %s written before the interruption", key)
                self._adopt(state, record)

    def retrain_due(self, state: LoopState) -> bool:
        """A new model is due after ``n_per_round`` new cases, or when the pool is done and cases are new."""
        new = len(state.annotated) - state.cases_in_last_model
        return new > 0 and (new >= self.settings.n_per_round or not state.remaining)

    def retrain(self, state: LoopState) -> None:
        """Train a model on every corrected case, score it on the held-out cases, record it."""
        round_index = len(state.models)
        items = [
            {
                "image": self.pool[r["key"]]["image"],
                "label": r["label"],
                "case_id": self.pool[r["key"]]["case_id"],
                "structure": 1,
                "structure_name": self.pool[r["key"]].get("structure_name", "object"),
                "group": self.pool[r["key"]].get("group", "unseen"),
            }
            for r in state.annotated
        ]
        out = self.state_dir / "models" / f"round_{round_index}.pt"
        figures = retrain_model(
            self.bundle_root,
            items,
            out,
            init_weights=self.general_weights if self.settings.transfer else None,
            iterations=self.settings.retrain_iterations,
            seed=self.settings.seed * 1000 + round_index,
            overrides=self.train_overrides,
            device=self.device,
        )
        heldout = self.evaluate_heldout(out)
        state.models.append(
            {"round": round_index, "cases": len(items), "weights": str(out), "heldout": heldout, "retrain": figures}
        )
        self._save(state)
        logger.info("round %d: %d cases, held-out Dice %.3f", round_index, len(items), heldout["mean_dice"])

    def run(self, max_cases: int | None = None) -> LoopState:
        """Run until the pool is exhausted (or ``max_cases`` more cases were annotated: an interruption point).

        Returns:
            The final :class:`~common.active_learning.state.LoopState` (also in ``state_dir/state.json``), with the
            report written (``report.json``, ``report.md``, ``learning_curves.png``).
        """
        state = self._load_state()
        self._recover(state)
        if not state.models:
            heldout = self.evaluate_heldout(self.general_weights)
            state.models.append(
                {"round": 0, "cases": 0, "weights": str(self.general_weights), "heldout": heldout, "retrain": None}
            )
            self._save(state)
        done_now = 0
        with tqdm(
            total=len(state.pool),
            initial=len(state.annotated) + len(state.skipped),
            desc=f"active learning ({self.settings.strategy})",
            unit="case",
            disable=not self.progress,
        ) as bar:
            while True:
                if self.retrain_due(state):
                    self.retrain(state)
                    bar.set_postfix(heldout_dice=f"{state.models[-1]['heldout']['mean_dice']:.3f}")
                    write_report(state, self.state_dir)
                if not state.remaining or (max_cases is not None and done_now >= max_cases):
                    break
                before = len(state.skipped)
                keys = self._usable(state)
                bar.update(len(state.skipped) - before)
                if not keys:
                    continue
                rng = state.generator()
                key, score = self.select(state, keys, rng)
                state.keep(rng)
                try:
                    self.annotate(state, key, score)
                except ValueError as err:  # the bundle rejected the case (e.g. a box it cannot use)
                    self._skip(state, key, str(err))
                bar.update(1)
                done_now += 1
        write_report(state, self.state_dir)
        return state
