"""Score run folders or shipped models on a prepared dataset, for one report.

Each run is scored on its own prepared split by default. Other data (a ``data:`` section from a
file and/or ``data.*`` overrides, :func:`choose_data`) is scored instead as a whole test split:
another annotated folder, another list file or another dataset. Only ``eval.*`` and ``data.*``
settings can change at evaluation time; the model fixes everything else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from kerasxai.config import Config, ConfigError, EvalConfig, with_data


@dataclass
class DataChoice:
    """What the runs are scored on: their own split, or other data as a whole test split."""

    eval_overrides: list[str] = field(default_factory=list)  # eval.* (the split included)
    data_file: str | None = None  # a config whose data: section replaces the runs'
    data_overrides: list[str] = field(default_factory=list)  # data.* overrides

    @property
    def other_data(self) -> bool:
        return self.data_file is not None or bool(self.data_overrides)


def choose_data(overrides: list[str], data_file: str | None = None, split: str | None = None) -> DataChoice:
    """Sort ``key=value`` overrides into eval.* and data.*; :class:`ConfigError` for any other
    key, or for a split other than test on other data."""
    bad = [o for o in overrides if not o.startswith(("eval.", "data."))]
    if bad:
        raise ConfigError(f"override '{bad[0]}' is not an eval.* or data.* key: only these can change at "
                          "evaluation time")
    choice = DataChoice([o for o in overrides if o.startswith("eval.")], data_file,
                        [o for o in overrides if o.startswith("data.")])
    if choice.other_data and split not in (None, "test"):
        raise ConfigError("--split: other data (--data or data.* overrides) is scored as its test split")
    choice.eval_overrides += [f"eval.split={split}"] if split else []
    choice.eval_overrides += ["eval.split=test"] if choice.other_data else []
    return choice


def run_configs(runs: list[str], choice: DataChoice) -> list[Config]:
    """Each run's config with the chosen eval settings and data."""
    from kerasxai.runs import run_config

    cfgs = [run_config(r, choice.eval_overrides) for r in runs]
    if choice.other_data:
        cfgs = [with_data(c, choice.data_file, choice.data_overrides) for c in cfgs]
    return cfgs


def labels(cfgs: list[Config], runs: list[str]) -> list[str]:
    """Row names: the model name, plus the run folder when two runs share a model."""
    names = [c.model.name for c in cfgs]
    return [n if names.count(n) == 1 else f"{n}@{Path(r).name}" for n, r in zip(names, runs)]


def data_description(data) -> str:
    """The scored data in words: reader, folder and reader options."""
    opts = ", ".join(f"{k}={v}" for k, v in sorted((data.options or {}).items()))
    return f"{data.reader} '{data.root}'" + (f" ({opts})" if opts else "")


def check_tiles_fit(model, cfg: Config) -> None:
    """The data must be tiled at the model's input size, with its channels."""
    _, h, w, c = model.input_shape
    if (h, w) != (cfg.data.tile.size, cfg.data.tile.size):
        raise ConfigError(f"key 'data.tile.size': the model takes {h}x{w} px tiles, the data is tiled at "
                          f"{cfg.data.tile.size} px: set data.tile.size={h}")
    if c != 3:
        raise ConfigError(f"the model takes {c}-channel tiles; kerasxai's readers give RGB (gray images "
                          "replicated): use a model trained on 3-channel tiles")


@dataclass
class RunsEvaluation:
    """The runs' evaluations and what they were scored on, as the report shows it."""

    runs: list[str]
    which: str  # checkpoint: best or last
    evaluations: list  # kerasxai.evaluation.ModelEvaluation, one per run
    eval: EvalConfig  # the first run's: split and thresholds
    data: str  # the scored data in words

    def context(self) -> dict:
        """The report's "what was scored" table."""
        e = self.eval
        return {
            "runs": " ".join(str(r) for r in self.runs),
            "data": self.data,
            "split": e.split,
            "tiles": ", ".join(f"{ev.label}: {ev.tiles}" for ev in self.evaluations),
            "score threshold": e.score_threshold,
            "pixel threshold": e.pixel_threshold,
            "checkpoint": self.which,
        }

    def write_report(self, out: Path) -> list:
        """The report folder (tables, figures, report.html; :func:`kerasxai.report.write_report`)."""
        from kerasxai.report import write_report

        e = self.eval
        return write_report(self.evaluations, out, title=f"kerasxai evaluation ({e.split} split)",
                            context=self.context(), score_threshold=e.score_threshold,
                            pixel_threshold=e.pixel_threshold)


def evaluate_runs(runs: list[str], choice: DataChoice | None = None, *, which: str = "best",
                  progress: bool = True) -> RunsEvaluation:
    """Score each run's ``which`` checkpoint on the chosen data (prepared, or reused from the
    cache); every model shows the same overlay tiles, chosen by the first run."""
    from kerasxai.data import DataError
    from kerasxai.data.pipeline import count_tiles, eval_batches, load_split, prepare_dataset, read_manifest
    from kerasxai.evaluation import evaluate_model, select_overlay_tiles
    from kerasxai.runs import load_run

    choice = choice or DataChoice()
    cfgs = run_configs(runs, choice)
    evaluations = []
    overlay_keys = None
    for run_dir, cfg, label in zip(runs, cfgs, labels(cfgs, runs)):
        _, model = load_run(run_dir, which)
        check_tiles_fit(model, cfg)
        e = cfg.eval
        prepared = prepare_dataset(cfg, progress=progress)
        n = count_tiles(prepared, e.split)
        if e.max_tiles is not None:
            n = min(n, int(e.max_tiles))
        if n == 0:
            raise DataError(f"no tiles to evaluate for '{label}': the split is empty")
        if overlay_keys is None:  # the first run chooses the tiles every model shows
            overlay_keys = select_overlay_tiles(read_manifest(prepared)["tiles"], e.overlay_tiles, e.split, n)
        ds = load_split(prepared, e.split)
        if e.max_tiles is not None:
            ds = ds.take(int(e.max_tiles))
        evaluations.append(
            evaluate_model(
                model, eval_batches(ds, e.batch_size).as_numpy_iterator(), eval_cfg=e,
                model_name=cfg.model.name, label=label, run=str(run_dir), overlay_keys=overlay_keys,
                progress=progress, total_batches=math.ceil(n / e.batch_size),
                host_parallel=cfg.model.host_parallel,
            )
        )
    data = data_description(cfgs[0].data) + ("" if choice.other_data else " (the runs' own split)")
    return RunsEvaluation(list(runs), which, evaluations, cfgs[0].eval, data)
