"""Shared fixtures. Tests run on the JAX backend unless KERAS_BACKEND says otherwise."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
DEEPPCB = REPO.parent / "shared" / "datasets" / "deeppcb"


@pytest.fixture(scope="session")
def deeppcb_root() -> Path:
    """The real DeepPCB folder beside the checkout; skips when it is absent."""
    if not (DEEPPCB / "PCBData" / "trainval.txt").is_file():
        pytest.skip(f"DeepPCB not found at {DEEPPCB} (../shared/datasets/deeppcb beside the checkout)")
    return DEEPPCB


@pytest.fixture(scope="session")
def standin_run(tmp_path_factory) -> Path:
    """A run folder predict can load without training: the CAM-by-construction stand-in model
    of tests/test_localize.py as ``best.keras`` beside a real resolved ``config.yaml`` (64 px
    tiles, overlap 8, batches of 4)."""
    from kerasxai.config import load_config
    from kerasxai.runs import write_config
    from test_localize import standin_model

    run = tmp_path_factory.mktemp("runs") / "standin-20260101-000000"
    run.mkdir()
    cfg = load_config(None, ["data.reader=synthetic", "model.name=mobilenetv3_large_d", "data.tile.size=64",
                             "data.tile.overlap=8", "eval.batch_size=4"])
    write_config(run, cfg)
    standin_model(64).save(run / "best.keras")
    return run


@pytest.fixture()
def umask():
    """Run the test under a known umask (returned), restoring the previous one after it."""
    mask = 0o027
    old = os.umask(mask)
    try:
        yield mask
    finally:
        os.umask(old)


def history_run(root: Path, name: str, seconds: list[float], aucs: list[float], prefix: str = "val_score_") -> Path:
    """A run folder with a config (batches of 8, 5 steps an epoch) and a history.csv of one row
    per epoch: its wall seconds, validation AUC ``aucs`` and accuracy 0.1 below (metrics named
    ``<prefix>auc``)."""
    from kerasxai.config import load_config
    from kerasxai.runs import write_config

    run = root / name
    run.mkdir(parents=True)
    write_config(run, load_config(None, ["data.reader=synthetic", "model.name=mobilenetv3_large_d",
                                         "train.batch_size=8", "train.steps_per_epoch=5"]))
    rows = [f"epoch,epoch_seconds,learning_rate,{prefix}auc,{prefix}accuracy"]
    rows += [f"{i},{s},0.001,{a},{a - 0.1}" for i, (s, a) in enumerate(zip(seconds, aucs))]
    (run / "history.csv").write_text("\n".join(rows) + "\n")
    return run


def modes(root: Path) -> dict:
    """``{relative path: permission bits}`` of `root` and everything below it."""
    return {str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in [root, *root.rglob("*")]}


def load_tool(script: str):
    """tools/<script> imported as a module, with tools/ on sys.path as when it runs as a script."""
    tools = str(REPO / "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    spec = importlib.util.spec_from_file_location(script.removesuffix(".py") + "_tool", REPO / "tools" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
