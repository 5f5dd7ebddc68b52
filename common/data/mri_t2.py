"""The T2-weighted-MRI-like contrast of :mod:`common.data.variants` (variant ``"mri_t2"``): its tissue table and curve.

A second held-out contrast for the domain-randomisation comparison, fixed before any randomised model was trained.
Its tissue ordering differs from both CT and the T1-like variant (``"mri"``), as on a fast spin-echo T2 scan of the
abdomen: fluid (bladder, gallbladder) brightest; liver lesions (cysts, metastases) bright against a dark liver (dark
on T1); spleen and kidneys brighter than liver; pancreas intermediate; muscle dark; fat bright; flowing blood dark
(flow voids); cortical bone, lung and air dark. Values are arbitrary units on a 0..1000 scale, like the T1 table.
"""

from __future__ import annotations

__all__ = ["MRI_T2_BACKGROUND_CURVE", "MRI_T2_INTENSITY"]

#: T2-weighted-like mean intensity per structure name (matched as :data:`common.data.variants.MRI_T1_INTENSITY`).
MRI_T2_INTENSITY: dict[str, float] = {
    "fat": 640.0,
    "pancreas": 380.0,
    "liver": 230.0,
    "adrenal": 330.0,
    "adrenal_gland": 330.0,
    "spleen": 560.0,
    "kidney": 600.0,
    "prostate": 620.0,
    "muscle": 170.0,
    "heart": 300.0,
    "stomach": 460.0,
    "bowel": 420.0,
    "colon": 420.0,
    "small_bowel": 420.0,
    "duodenum": 420.0,
    "esophagus": 300.0,
    "liver_lesion": 760.0,
    "lesion": 760.0,
    "tumour": 680.0,
    "tumor": 680.0,
    "cancer": 680.0,
    "hepatic_vessel": 70.0,
    "portal_vein": 70.0,
    "inferior_vena_cava": 70.0,
    "ivc": 70.0,
    "aorta": 50.0,
    "iliac": 50.0,
    "iliac_artery": 50.0,
    "gallbladder": 900.0,
    "bladder": 950.0,
    "urinary_bladder": 950.0,
    "lung": 30.0,
}

#: ``(hu, intensity)`` knots for unlabelled voxels (``np.interp``): air and lung dark, fat bright, muscle and soft
#: tissue dark-grey, fatty marrow intermediate, cortical bone dark.
MRI_T2_BACKGROUND_CURVE: tuple[tuple[float, float], ...] = (
    (-1024.0, 10.0),
    (-800.0, 35.0),
    (-100.0, 640.0),
    (40.0, 200.0),
    (150.0, 190.0),
    (350.0, 420.0),
    (700.0, 50.0),
    (3071.0, 30.0),
)
