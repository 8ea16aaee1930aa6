"""report.html reads at a glance: summary table first (with the thesis figures), the wide tables
folded in <details> inside scroll containers, the pixel PR curves as a figure; and in a real
headless browser (skipped without chromium) it fits a 1280 px window without sideways scrolling."""

import base64
import csv
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from kerasxai.evaluation import ModelEvaluation
from kerasxai.metrics import LocalizationMetrics
from kerasxai.report import SUMMARY_COLUMNS, summary_rows, write_report
from kerasxai.thesis import THESIS_MAPS, THESIS_TRAINING
from test_evaluate import fake_evaluation, synthetic_batches


def with_curves(ev: ModelEvaluation, seed: int) -> ModelEvaluation:
    """`ev` with the PR curves and PxAP of random maps that lean towards the masks."""
    rng = np.random.default_rng(seed)
    acc = LocalizationMetrics(score_threshold=0.5, ungated=True)
    for b in synthetic_batches(seed=seed):
        acc.update(rng.random(4), rng.random((4, 4, 4)) + b["mask"][:, ::16, ::16], b["mask"], b["valid"], b["label"])
    ev.metrics.update({k: v for k, v in acc.result().items() if k.startswith("pxap")})
    ev.pr_curves = {"gated": acc.threshold_free.curve(), "ungated": acc.ungated[1].curve()}
    return ev


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    evs = [with_curves(fake_evaluation("mobilenetv3_large", "mobilenetv3_large", "cnn", 0), 0),
           with_curves(fake_evaluation("mobilenetv3_large_d", "mobilenetv3_large_d", "cnn", 1), 1),
           with_curves(fake_evaluation("vit_tiny_patch16_224", "vit_tiny_patch16_224", "transformer", 2), 2),
           with_curves(fake_evaluation("my_run", "deit_tiny_distilled_patch16_224", "transformer", 3), 3)]
    out = tmp_path_factory.mktemp("report")
    return evs, out, write_report(evs, out, context={"split": "test", "tiles": "x" * 300})


class Outline(HTMLParser):
    """Top-level blocks of <body> in order: ("h2", text), ("table", class), ("details", summary), ("img", alt);
    plus whether every <table> sits in a .scroll container."""

    def __init__(self):
        super().__init__()
        self.blocks, self.stack, self.tables_in_scroll, self.tables, self._text = [], [], 0, 0, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("p", "br", "img", "meta"):
            if tag == "img" and "details" not in self.stack:
                self.blocks.append(("img", a.get("alt", "")))
            return
        top = "details" not in self.stack
        if tag == "table":
            self.tables += 1
            self.tables_in_scroll += "scroll" in self.stack
            if top:
                self.blocks.append(("table", a.get("class", "")))
        if tag in ("h2", "summary"):
            self._text = ""
        self.stack.append(a.get("class") if tag == "div" else tag)

    def handle_endtag(self, tag):
        if tag in ("p", "br", "img", "meta"):
            return
        self.stack.pop()
        if tag == "h2" and "details" not in self.stack:
            self.blocks.append(("h2", self._text))
        if tag == "summary":
            self.blocks.append(("details", self._text))

    def handle_data(self, data):
        if self._text is not None:
            self._text += data


def test_summary_table_comes_first_with_thesis_figures(report):
    evs, out, written = report
    page = (out / "report.html").read_text()
    o = Outline()
    o.feed(page)
    kinds = [k for k, _ in o.blocks]
    assert o.blocks[0] == ("h2", "Summary") and o.blocks[1] == ("table", "summary")
    pr = kinds.index("img")
    assert "precision-recall" in o.blocks[pr][1] and pr < kinds.index("details")
    folded = [t for k, t in o.blocks if k == "details"]
    assert any("All map metrics" in t for t in folded) and any("Ranking" in t for t in folded)
    assert any("baselines" in t for t in folded)
    assert o.tables == 4 and o.tables_in_scroll == 4  # summary + three wide tables, each scrolls inside
    assert ("table", "") not in o.blocks  # no wide table outside a <details>

    rows = {r["model"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert list(rows) == [e.label for e in evs] and list(rows["my_run"]) == SUMMARY_COLUMNS
    cnn, vit, deit = rows["mobilenetv3_large"], rows["vit_tiny_patch16_224"], rows["my_run"]
    assert float(cnn["thesis_classification_accuracy"]) == pytest.approx(THESIS_TRAINING["mobilenetv3_large"][4] / 100)
    assert float(cnn["thesis_pooled_f1"]) == THESIS_MAPS["mobilenetv3_large"][0]
    assert float(vit["thesis_pointing_game"]) == THESIS_MAPS["vit_tiny_patch16_224_fmax"][5]  # its own fusion
    assert deit["thesis_pooled_f1"] == "" and deit["thesis_classification_accuracy"] == ""  # no thesis figure
    for e in evs:
        r = rows[e.label]
        for k in ("classification_accuracy", "pooled_f1", "pointing_game", "pxap"):
            assert float(r[k]) == pytest.approx(e.metrics[k], abs=1e-4)


def test_pr_figure_is_written_and_its_curves_give_pxap(report):
    evs, out, written = report
    assert "figures/pr_curves.png" in written and (out / "figures/pr_curves.png").stat().st_size > 1000
    page = (out / "report.html").read_text()
    b64 = base64.b64encode((out / "figures/pr_curves.png").read_bytes()).decode()
    assert b64 in page
    for e in evs:  # the plotted curve is the one whose area is the reported PxAP
        c = e.pr_curves["gated"]
        area = float(np.sum(np.diff(c["recall"], prepend=0.0) * c["precision"]))
        assert area == pytest.approx(e.metrics["pxap"], abs=1e-9)


def test_no_pr_figure_without_curves(tmp_path):
    written = write_report([fake_evaluation("a", "mobilenetv3_large", "cnn", 0)], tmp_path)
    assert "figures/pr_curves.png" not in written
    assert "precision-recall" not in (tmp_path / "report.html").read_text()
    assert summary_rows([fake_evaluation("a", "mobilenetv3_large", "cnn", 0)])[0]["thesis_pooled_f1"] == 0.5214


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_report_fits_a_1280px_window_in_chromium(report, tmp_path):
    evs, out, _ = report
    page = (out / "report.html").read_text()
    probe = ("<script>window.addEventListener('load',()=>{const d=document.documentElement;"
             "document.querySelectorAll('details').forEach(e=>{e.open=true;});"  # the folded tables laid out too
             "document.body.setAttribute('data-scroll-width',String(d.scrollWidth));"
             "document.body.setAttribute('data-open-details',String(document.querySelectorAll('details[open]').length));"
             "});</script></body>")
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", probe))
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,2000",
                           "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
                          capture_output=True, text=True, timeout=120)
    m = re.search(r'data-scroll-width="(\d+)"', proc.stdout)
    assert m, proc.stderr[-2000:]
    assert int(m.group(1)) <= 1280
    assert 'data-open-details="4"' in proc.stdout  # measured with every table unfolded


@pytest.mark.slow
def test_evaluate_model_keeps_the_curves_behind_pxap():
    import keras

    from kerasxai.config import EvalConfig
    from kerasxai.evaluation import evaluate_model
    from kerasxai.models import build_model

    keras.utils.set_random_seed(1)
    model = build_model("mobilenetv3_large_d", input_shape=(64, 64, 3))
    ev = evaluate_model(model, synthetic_batches(), eval_cfg=EvalConfig(score_threshold=0.3, baselines=False),
                        model_name="mobilenetv3_large_d", progress=False)
    for kind, key in (("gated", "pxap"), ("ungated", "pxap_ungated")):
        c = ev.pr_curves[kind]
        assert np.all(np.diff(c["recall"]) >= 0) and c["recall"][-1] == pytest.approx(1.0)
        area = float(np.sum(np.diff(c["recall"], prepend=0.0) * c["precision"]))
        assert area == pytest.approx(ev.metrics[key], abs=1e-9)


def test_overlay_map_is_the_protocols_ungated_map():
    """The overlay figure draws the tile's protocol map before the score gate; a constant map
    (any value) draws as zeros, never as interpolation noise stretched to 0..1."""
    from kerasxai.metrics.protocol import prepare_maps
    from kerasxai.report import _normalized

    rng = np.random.default_rng(2)
    valid = np.ones((64, 64), np.uint8)
    valid[:, 40:] = 0
    heat = rng.normal(size=(7, 7)).astype(np.float32)
    want = prepare_maps([0.0], heat[None], np.zeros((1, 64, 64)), valid[None], score_threshold=0.5).ungated[0]
    assert np.array_equal(_normalized(heat, 64, valid), want) and want.max() == 1 and not want[:, 40:].any()
    for value in (0.1, 2.5, 7.7):
        assert not _normalized(np.full((7, 7), value, np.float32), 64, valid).any()
