"""Localize a batch of image files into an output folder, with nothing partial or overwritten.

Per image ``<stem>_overlay.png``, ``<stem>_mask.png`` and ``<stem>.json`` (see
:mod:`kerasxai.localize`), plus ``summary.csv`` for the whole batch. Every file is written to a
temporary name and renamed, and an image's files only once all of them are encoded: an image
whose files cannot all be written keeps none. The output folder is checked before the model
loads (:func:`check_out_dir`): it must not hold an input image or a name the batch would write.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

from kerasxai.runtime import temp_path
from kerasxai.tables import csv_table

# The batch table, one row per image.
SUMMARY = "summary.csv"
SUMMARY_FIELDS = ["image", "status", "verdict", "max_score", "regions", "tiles", "height", "width", "json", "error"]


class OutputError(ValueError):
    """The output folder cannot take the batch's files (a file, not writable, would overwrite)."""


def write_atomic(files: dict[str, bytes], out_dir: Path) -> None:
    """Write all ``files`` (name -> bytes) to temporary names, then rename them into place.

    All or nothing: on any failure the files already renamed are removed again (predict
    checked beforehand that none of these names existed) and no temporary file is left."""
    tmps, done = [], []
    try:
        for name, data in files.items():
            tmp = temp_path(out_dir / name)
            tmps.append((tmp, out_dir / name))
            with open(tmp, "wb") as fh:
                fh.write(data)
        for tmp, final in tmps:
            os.replace(tmp, final)
            done.append(final)
    except BaseException:
        for final in done:
            with contextlib.suppress(OSError):
                final.unlink()
        raise
    finally:
        for tmp, _ in tmps:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def unique_stems(paths: list[Path]) -> list[str]:
    """File stems, made unique within the batch (``a``, ``a-2``, ...) so outputs never collide;
    a suffixed stem skips names taken by other images (``a-2.png`` itself), ignoring case."""
    counts: dict[str, int] = {}
    used: set[str] = set()
    out = []
    for p in paths:
        stem, n = p.stem, counts.get(p.stem, 1)
        name = stem if n == 1 else f"{stem}-{n}"
        while name.casefold() in used:
            n += 1
            name = f"{stem}-{n}"
        counts[stem] = n + 1
        used.add(name.casefold())
        out.append(name)
    return out


def _folder_problem(out_dir: Path) -> str | None:
    """Why ``--out`` cannot take the outputs (a file, not writable), or None. Checked before the
    model loads; a folder that does not exist yet needs a writable existing parent."""
    if out_dir.exists() and not out_dir.is_dir():
        return f"--out '{out_dir}' is a file, not a folder: pass a new or empty folder"
    if out_dir.is_dir():
        try:
            with tempfile.TemporaryFile(dir=out_dir):
                pass
        except OSError as exc:
            return f"--out '{out_dir}' is not writable ({exc.strerror or exc}): pick a folder you can write to"
        return None
    parent = next(p for p in out_dir.absolute().parents if p.exists())
    if not parent.is_dir():
        return f"--out '{out_dir}': '{parent}' is a file, not a folder: pass a new or empty folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"--out '{out_dir}' cannot be created: '{parent}' is not writable: pick a folder you can write to"
    return None


def _clash_problem(out_dir: Path, paths: list[Path], stems: list[str]) -> str | None:
    """Why writing into ``--out`` could overwrite a file predict did not write, or None: an
    input image lies in it, or it already holds a name predict would write."""
    from kerasxai.localize import output_names

    if not out_dir.is_dir():
        return None
    here = out_dir.resolve()
    for path in paths:
        if path.resolve().parent == here:
            return (f"--out '{out_dir}' holds the input image '{path}': pick an empty or new --out folder, "
                    "so inputs and annotations are never overwritten")
    existing = set(os.listdir(out_dir))
    for name in [SUMMARY] + [n for stem in stems for n in output_names(stem).values()]:
        if name in existing:
            return (f"--out '{out_dir}' already holds '{out_dir / name}', which predict would overwrite: "
                    "pick an empty or new --out folder")
    return None


def check_out_dir(out_dir: Path, paths: list[Path], stems: list[str]) -> None:
    """Raise :class:`OutputError` unless ``out_dir`` can take the files of ``paths`` named by
    ``stems`` without overwriting anything (checked before the model loads)."""
    problem = _folder_problem(out_dir) or _clash_problem(out_dir, paths, stems)
    if problem:
        raise OutputError(problem)


def make_out_dir(out_dir: Path) -> None:
    """Create ``out_dir`` (and its parents) if missing; :class:`OutputError` when it cannot be."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create --out '{out_dir}': {one_line(exc)}: pick a folder you can write to") from exc


def load_localizer(run: Path, **options):
    """:meth:`Localizer.from_run <kerasxai.localize.Localizer.from_run>` of ``run``; a run that
    cannot be loaded is a :class:`~kerasxai.runs.RunError` naming it."""
    from kerasxai.localize import Localizer
    from kerasxai.runs import RunError

    try:
        return Localizer.from_run(run, **options)
    except (OSError, ValueError) as exc:  # ConfigError, RunError, a bad or missing file
        raise RunError(f"cannot load run '{run}': {exc}") from exc


def summary_csv(rows: list[dict]) -> bytes:
    """The batch table: one row per image, in input order (status ok or error)."""
    return csv_table(SUMMARY_FIELDS, [[r.get(f) for f in SUMMARY_FIELDS] for r in rows]).encode()


def one_line(exc: BaseException) -> str:
    """An exception as one line: the OS reason for I/O errors, else type and message."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
    return " ".join(str(text).split())


def predict_batch(localizer, paths: list[Path], stems: list[str], out_dir: Path, progress: bool = True,
                  prefix: str = "error: ") -> list[dict]:
    """Localize ``paths`` and write each image's files; the summary rows, in input order.

    An image that cannot be read, rendered or written becomes an ``error`` row (its files all
    removed), a stderr line starting with ``prefix``, and the others go on."""
    from tqdm import tqdm

    from kerasxai.localize import LocalizeError, OutputQueue, load_image, render_outputs

    rows: list[dict] = []
    timings = localizer.timings
    bar = tqdm(total=len(paths), unit="img", desc="predict", disable=not progress, file=sys.stderr)

    def error_row(row: dict, path: Path, msg: str) -> None:
        bar.write(f"{prefix}{msg} (skipped)", file=sys.stderr)
        row.clear()
        row.update({"image": str(path), "status": "error", "error": msg})

    def items():
        for path, stem in zip(paths, stems):
            t0 = time.perf_counter()
            try:
                image = load_image(path)
            except LocalizeError as exc:
                rows.append({})
                error_row(rows[-1], path, str(exc))
                bar.update(1)
                continue
            finally:
                timings["read"] += time.perf_counter() - t0
            yield (path, stem, image), image

    def render_and_write(image, result, stem, path, row):
        t0 = time.perf_counter()
        try:
            files = render_outputs(image, result, stem, source=str(path))
            t1 = time.perf_counter()
            write_atomic(files, out_dir)
            timings["render"] += t1 - t0
            timings["write"] += time.perf_counter() - t1
        except Exception as exc:  # one image's failure must not lose the batch
            error_row(row, path, f"cannot write the outputs of '{path}' to '{out_dir}': {one_line(exc)}; none kept")
        finally:
            bar.update(1)

    with OutputQueue() as outputs:  # encode and write while the model runs the next batch
        for (path, stem, image), result in localizer.localize_stream(items()):
            h, w = result.heatmap.shape
            rows.append({"image": str(path), "status": "ok", "verdict": result.verdict,
                         "max_score": f"{result.max_score:.6f}", "regions": len(result.regions),
                         "tiles": len(result.positions), "height": h, "width": w, "json": f"{stem}.json", "error": ""})
            outputs.submit(render_and_write, image, result, stem, path, rows[-1])
    bar.close()
    order = {str(p): i for i, p in enumerate(paths)}
    rows.sort(key=lambda r: order.get(r["image"], -1))
    return rows
