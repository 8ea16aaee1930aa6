"""The package's floors (docs/architecture.md, "Layers"): no module imports from a floor above its own.

Every ``import`` and ``from ... import`` in every module counts, also the ones inside functions
(deferred imports are still dependencies), so a new upward import fails here, naming the file.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kerasxai"

# Bottom to top. A module belongs to the floor of the longest prefix listed; every module of
# the package must have one (a new top-level module gets its floor here and in the docs).
FLOORS = [
    ["kerasxai.runtime", "kerasxai.choices", "kerasxai.tables", "kerasxai.thesis"],
    ["kerasxai.config", "kerasxai.precision"],
    ["kerasxai.data", "kerasxai.metrics", "kerasxai.models"],
    ["kerasxai.explain", "kerasxai.runs", "kerasxai.pretrained"],
    ["kerasxai.training", "kerasxai.tuning", "kerasxai.evaluation", "kerasxai.localize", "kerasxai.serving",
     "kerasxai.report", "kerasxai.curves", "kerasxai.tensorboard_images", "kerasxai.sample"],
    ["kerasxai.run_evaluation", "kerasxai.prediction", "kerasxai.tuning_cluster"],
    ["kerasxai.cli", "kerasxai.__main__", "kerasxai.prepare", "kerasxai.train", "kerasxai.tune",
     "kerasxai.evaluate", "kerasxai.predict", "kerasxai.export", "kerasxai.demo"],
]
# The package itself only names its public API and imports it lazily (kerasxai/__init__.py).
FACADE = "kerasxai"


def _modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


MODULES = _modules()


def floor(module: str) -> int:
    best = None
    for level, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[1])):
                best = (level, prefix)
    if best is None:
        raise AssertionError(f"{module} has no floor: add it to FLOORS in tests/test_layering.py and to docs/architecture.md")
    return best[0]


def imported(module: str, path: Path) -> set[str]:
    """The kerasxai modules ``module`` imports (a name imported from a package counts as its submodule when it is one)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return {m for m in out if m.startswith("kerasxai") and m not in (module, FACADE)}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != FACADE))
def test_no_import_runs_upward(module):
    own = floor(module)
    upward = sorted(m for m in imported(module, MODULES[module]) if floor(m) > own)
    assert not upward, f"{MODULES[module].relative_to(PACKAGE.parent)} (floor {own}) imports from above: " + ", ".join(
        f"{m} (floor {floor(m)})" for m in upward)


def test_the_floors_cover_every_module_and_name_only_existing_ones():
    for m in MODULES:
        if m != FACADE:
            floor(m)
    listed = [p for prefixes in FLOORS for p in prefixes]
    assert not [p for p in listed if p not in MODULES], "FLOORS names modules that do not exist"
