"""The public API of ``import kerasxai``: lazy names, no framework on import, and the README's
"Python API" example run as written."""

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import kerasxai

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- python-api-example"
HEAVY = ("keras", "jax", "tensorflow", "numpy", "omegaconf", "keras_tuner")


def readme_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("\n## Python API\n")
    return text[start:text.index("\n## ", start + 1)]


def readme_example() -> str:
    """The ```python block right after the marker in README.md."""
    section = readme_section()
    assert MARKER in section, f"README.md's Python API section lost its marker {MARKER!r}"
    block = re.search(r"```python\n(.*?)```", section[section.index(MARKER):], re.S)
    assert block, "no ```python block after the marker in README.md"
    return block.group(1)


def test_import_imports_no_framework():
    code = f"import sys, kerasxai\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("name", kerasxai.__all__)
def test_each_name_is_the_function_of_its_module(name):
    module, attr = kerasxai._API[name]
    assert getattr(kerasxai, name) is getattr(importlib.import_module(module), attr)
    assert name in dir(kerasxai)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        kerasxai.nope  # noqa: B018


def test_readme_lists_the_api_and_its_example_uses_it():
    section = readme_section()
    assert all(f"`{name}`" in section for name in kerasxai.__all__)
    used = {node.attr for node in ast.walk(ast.parse(readme_example()))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "kerasxai"}
    assert used and used <= set(kerasxai.__all__)


@pytest.mark.slow
def test_readme_example_runs(tmp_path):
    from kerasxai.runs import run_config

    r = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    name, verdict, score, boxes = r.stdout.strip().splitlines()[-1].split(" ", 3)
    threshold = run_config("deeppcb-mobilenetv3_large_d").eval.score_threshold
    assert name.endswith(".jpg") and 0.0 <= float(score) <= 1.0
    assert verdict == ("defective" if float(score) > threshold else "good")
    boxes = ast.literal_eval(boxes)
    assert all(len(b) == 4 and b[0] < b[2] and b[1] < b[3] for b in boxes)
    assert bool(boxes) <= (verdict == "defective")  # regions only on a defective board
