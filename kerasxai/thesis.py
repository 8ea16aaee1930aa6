"""The study's own figures on its PCB dataset (thesis tables 3.2 and 3.4), shown beside ours.

They come from ImageNet-pretrained models fine-tuned on another PCB dataset with another
budget: compare trends, not values. Rows are keyed like the report's metric rows: the model
name for CNNs, ``<model>_f<fusion>`` for transformers.
"""

from __future__ import annotations

THESIS_TRAINING = {  # model: (lr, batch size, loss, val acc %, test acc %)
    "efficientnetv2_s": (0.0028, 64, 0.079, 98.41, 98.49),
    "efficientnetv2_s_d": (0.0020, 32, 0.073, 98.46, 98.54),
    "mobilenetv3_large": (0.0080, 64, 0.082, 98.33, 98.15),
    "mobilenetv3_large_d": (0.0028, 64, 0.087, 98.10, 98.12),
    "deit_tiny_patch16_224": (0.00008, 64, 0.088, 98.13, 98.26),
    "vit_tiny_patch16_224": (0.00007, 32, 0.084, 98.30, 98.36),
}
THESIS_MAPS = {  # row: (F1, precision, Jaccard, accuracy, recall, pointing game)
    "efficientnetv2_s_d": (0.5482, 0.8918, 0.3776, 0.9962, 0.3958, 0.823),
    "efficientnetv2_s": (0.4652, 0.7886, 0.3031, 0.9956, 0.321, 0.7867),
    "mobilenetv3_large_d": (0.6397, 0.5933, 0.4703, 0.9954, 0.6941, 0.7598),
    "mobilenetv3_large": (0.5214, 0.4943, 0.3527, 0.9941, 0.5518, 0.5701),
    "deit_tiny_patch16_224_fmin": (0.3262, 0.9620, 0.1949, 0.9953, 0.1964, 0.7877),
    "deit_tiny_patch16_224_fmean": (0.43, 0.8791, 0.2739, 0.9956, 0.2846, 0.7838),
    "deit_tiny_patch16_224_fmax": (0.5113, 0.5993, 0.3434, 0.995, 0.4458, 0.7239),
    "vit_tiny_patch16_224_fmin": (0.2726, 0.886, 0.1578, 0.9949, 0.1611, 0.7912),
    "vit_tiny_patch16_224_fmean": (0.4041, 0.8896, 0.2532, 0.9955, 0.2613, 0.7924),
    "vit_tiny_patch16_224_fmax": (0.5142, 0.7543, 0.346, 0.9957, 0.3901, 0.7724),
}


def thesis_summary(model: str, fusion: str | None = None) -> dict:
    """The thesis' test accuracy (0..1), pooled F1 and pointing game of a model (transformers:
    at head fusion `fusion`); keys are absent where the thesis has no figure."""
    out = {}
    if model in THESIS_TRAINING:
        out["classification_accuracy"] = THESIS_TRAINING[model][4] / 100
    maps = THESIS_MAPS.get(f"{model}_f{fusion}" if fusion else model)
    if maps:
        out["pooled_f1"], out["pointing_game"] = maps[0], maps[5]
    return out
