"""Trained models shipped inside the package, loadable by name wherever a run folder is accepted.

Each shipped model is a folder ``kerasxai/pretrained/<name>/`` laid out like a run folder:
``config.yaml`` (the training config), ``best.keras`` (the locator: {score, heatmap}) and
``MODEL_CARD.md`` (data, split, held-out boards, the command that reproduces it, metrics,
limits). ``predict --run NAME``, ``evaluate --runs NAME``, ``export --run NAME`` and
:func:`load_pretrained` take the name.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PRETRAINED_DIR", "load_pretrained", "model_card", "pretrained_dir", "pretrained_names"]

PRETRAINED_DIR = Path(__file__).resolve().parent
REQUIRED = ("config.yaml", "best.keras")


class PretrainedError(ValueError):
    """An unknown or incomplete shipped model; the message lists the names that exist."""


def pretrained_names() -> list[str]:
    """Names of the shipped models (folders holding a config and a model)."""
    return sorted(p.name for p in PRETRAINED_DIR.iterdir()
                  if p.is_dir() and all((p / f).is_file() for f in REQUIRED))


def pretrained_dir(name: str) -> Path:
    """The run-folder-like directory of shipped model `name`."""
    names = pretrained_names()
    if name not in names:
        raise PretrainedError(f"no shipped model named '{name}': the package ships "
                              f"{', '.join(names) or 'none'} (or pass a run folder)")
    return PRETRAINED_DIR / name


def model_card(name: str) -> str:
    """The model card (Markdown) of shipped model `name`."""
    card = pretrained_dir(name) / "MODEL_CARD.md"
    return card.read_text() if card.is_file() else ""


def load_pretrained(name: str):
    """``(Config, keras.Model)`` of shipped model `name`, ready for predict / evaluate.

    Example:
        cfg, model = load_pretrained("deeppcb-mobilenetv3_large_d")
        out = model.predict(tiles)  # {"score": (B, 1), "heatmap": (B, 14, 14)}
    """
    from kerasxai.runs import load_run

    return load_run(pretrained_dir(name))
