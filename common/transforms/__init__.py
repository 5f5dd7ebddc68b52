"""Transforms shared by the bundles: pure array functions (:mod:`.functional`) and MONAI dictionary transforms.

Config-facing names are re-exported here, e.g. ``"_target_": "common.transforms.RandPriorSliced"``.
"""

from __future__ import annotations

from common.transforms.checks import CheckSpatialDimsd
from common.transforms.clicks import (
    ClickBatch,
    ErosionDepth,
    ErrorRegions,
    add_new_clicks,
    chamfer_depth,
    click_weights,
    draw_clicks,
    error_regions,
    reference_chamfer_depth,
    reference_error_click,
    sample_flat_indices,
    simulate_error_clicks,
    start_chamfer_depth,
)
from common.transforms.functional import (
    JITTER_MODES,
    annotated_slice_indices,
    annotation_from_slices,
    foreground_per_slice,
    jitter_mask_about_centre,
    middle_slice_index,
)
from common.transforms.guidance import (
    AddGuidanced,
    ClickMapsd,
    SliceAxisLastd,
    click_map_from_points,
    render_guidance,
    render_slice_guidance,
    validate_points,
)
from common.transforms.intensity import (
    INTENSITY_MODES,
    NormalizeIntensityByModalityd,
    normalize_intensity,
    otsu_threshold,
)
from common.transforms.priors import (
    MaskPriorJitterd,
    RandMaskPriorJitterd,
    RandPriorSliced,
    SliceAnnotationFromLabeld,
)
from common.transforms.slices import StructureSlicesd, evenly_spaced
from common.transforms.synthesis import synthesize_image, synthetic_image_transforms
from common.transforms.synthesis_corruption import (
    RandContrastInversiond,
    RandSynthBiasFieldd,
    RandSynthGammad,
    RandSynthNoised,
)
from common.transforms.synthesis_generation import (
    HUTissueClassesd,
    hu_tissue_classes,
    synthetic_training_transforms,
    with_synthesis,
)
from common.transforms.synthesis_intensities import SynthesizeIntensitiesd, background_subregions
from common.transforms.synthesis_resolution import RandResolutiond, simulate_acquisition

__all__ = [
    "INTENSITY_MODES",
    "JITTER_MODES",
    "AddGuidanced",
    "CheckSpatialDimsd",
    "ClickBatch",
    "ClickMapsd",
    "ErosionDepth",
    "ErrorRegions",
    "HUTissueClassesd",
    "MaskPriorJitterd",
    "NormalizeIntensityByModalityd",
    "RandContrastInversiond",
    "RandMaskPriorJitterd",
    "RandPriorSliced",
    "RandResolutiond",
    "RandSynthBiasFieldd",
    "RandSynthGammad",
    "RandSynthNoised",
    "SliceAnnotationFromLabeld",
    "SliceAxisLastd",
    "StructureSlicesd",
    "SynthesizeIntensitiesd",
    "add_new_clicks",
    "annotated_slice_indices",
    "annotation_from_slices",
    "background_subregions",
    "chamfer_depth",
    "click_map_from_points",
    "click_weights",
    "draw_clicks",
    "error_regions",
    "evenly_spaced",
    "foreground_per_slice",
    "hu_tissue_classes",
    "jitter_mask_about_centre",
    "middle_slice_index",
    "normalize_intensity",
    "otsu_threshold",
    "reference_chamfer_depth",
    "reference_error_click",
    "render_guidance",
    "render_slice_guidance",
    "sample_flat_indices",
    "simulate_acquisition",
    "simulate_error_clicks",
    "start_chamfer_depth",
    "synthesize_image",
    "synthetic_image_transforms",
    "synthetic_training_transforms",
    "validate_points",
    "with_synthesis",
]
