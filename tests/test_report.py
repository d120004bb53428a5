"""The HTML report: self-contained, every section present, figures that are real pictures."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

from matplotlib import image as mpimg

from custembed import lakefs
from custembed.report import SECTIONS, ReportData, TrainingHistory, render_report

SOURCES = ("bert4rec", "electra")
PRODUCTS = ("water_purifier", "styler", "gram")
BEHAVIOURS = ["buying", "consulting", "repairing", "visiting"]
CLASSIFIER = "random_forest"
ATTENTION_PAIRS_SHOWN = 3  # of 4: the cap is exercised
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _metrics() -> pd.DataFrame:
    rows = []
    for source_index, source in enumerate(SOURCES):
        for product_index, product in enumerate(PRODUCTS):
            auc = 0.60 + 0.05 * product_index + 0.02 * source_index
            rows.append(
                {
                    "source": source,
                    "product": product,
                    "classifier": CLASSIFIER,
                    "rows": 1000,
                    "positives": 10,
                    "auc": auc,
                    "f1": 0.02 + 0.01 * source_index,
                    "precision": 0.01,
                    "recall": 0.5,
                    "accuracy": 0.7,
                    "top10_lift": 2.0 + product_index + source_index,
                    "message": "",
                }
            )
    # electra beats bert4rec on water purifier AUC (the paper's 0.695 -> 0.817)
    rows[0]["auc"], rows[len(PRODUCTS)]["auc"] = 0.695, 0.817
    rows[1]["message"] = "only 10 positives in the test set"
    # another classifier's rows must not leak into the comparison
    rows.append({**rows[0], "classifier": "logistic_regression", "auc": 0.999})
    return pd.DataFrame(rows)


def _decile_lift() -> pd.DataFrame:
    rows = []
    for source_index, source in enumerate(SOURCES):
        for product in PRODUCTS:
            for decile in range(1, 11):
                lift = max(0.2, (3.5 + source_index) - 0.4 * (decile - 1) * (1 + source_index * 0.2))
                rows.append(
                    {
                        "source": source,
                        "product": product,
                        "classifier": CLASSIFIER,
                        "decile": decile,
                        "customers": 100,
                        "buyers": round(lift),
                        "buy_rate": lift / 100,
                        "lift": lift,
                        "cumulative_lift": lift,
                    }
                )
    return pd.DataFrame(rows)


def _classifier_comparison() -> pd.DataFrame:
    rows = []
    for index, classifier in enumerate(("random_forest", "xgboost", "logistic_regression")):
        rows.append(
            {
                "source": "electra",
                "product": "water_purifier",
                "classifier": classifier,
                "rows": 1000,
                "positives": 10,
                "auc": 0.80 - 0.02 * index,
                "f1": 0.03,
                "precision": 0.02 + 0.01 * index,
                "recall": 0.4,
                "accuracy": 0.71,
                "top10_lift": 6.88 - index,
                "message": None,
            }
        )
    return pd.DataFrame(rows)


def _probes() -> pd.DataFrame:
    from custembed.comparison import probe_table

    metrics = _metrics()
    linear = metrics.assign(classifier="logistic_regression", auc=metrics["auc"] - 0.05)
    return probe_table(pd.concat([metrics, linear], ignore_index=True))


def _model_info() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "source": "bert4rec",
                "parameters": 120_000,
                "hidden_size": 64,
                "train_seconds": 3600.0,
                "embed_customers_per_s": 5000.0,
                "val_loss": 3.1,
                "val_accuracy": 0.31,
                "hr_at_10": 0.6,
                "ndcg_at_10": 0.4,
            },
            {
                "source": "electra",
                "parameters": 13_500_000,
                "hidden_size": 256,
                "train_seconds": 450.5,
                "embed_customers_per_s": 800.0,
                "val_loss": 2.2,
                "val_accuracy": 0.45,
                "hr_at_10": np.nan,
                "ndcg_at_10": np.nan,
            },
        ]
    )


def _history(*, ranking: bool, steps_per_epoch: int = 10) -> pd.DataFrame:
    """A fake MLflow history: the loss per step, validation after each of 4 epochs, best after the third."""
    rows = [("train_loss", step, 5.0 / (1 + 0.05 * step)) for step in range(1, 4 * steps_per_epoch + 1)]
    # a resumed run logs the step of its checkpoint again: the later value is the one that counts
    rows.append(("val_loss", 3 * steps_per_epoch, 9.9))
    for epoch, (loss, hit) in enumerate(((4.0, 0.2), (3.2, 0.3), (3.0, 0.35), (3.3, 0.33)), start=1):
        rows.append(("val_loss", epoch * steps_per_epoch, loss))
        rows += (
            [("hr_at_10", epoch * steps_per_epoch, hit), ("ndcg_at_10", epoch * steps_per_epoch, hit / 2)]
            if ranking
            else [("val_accuracy", epoch * steps_per_epoch, hit)]
        )
    return pd.DataFrame(rows, columns=["metric", "step", "value"])


def _training_histories() -> list[TrainingHistory]:
    return [
        TrainingHistory("bert4rec", _history(ranking=True), kept_step=30, origin="custembed-bert4rec version 2"),
        TrainingHistory("electra", _history(ranking=False)),  # no kept step recorded
    ]


def _projections(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    projections = {}
    for source, count in (("bert4rec", 160), ("electra", 90)):
        is_buyer = rng.random(count) < 0.15
        embeddings = rng.normal(size=(count, 16)).astype(np.float32)
        embeddings[is_buyer, :4] += 2.5  # buyers sit apart
        projections[source] = (embeddings, is_buyer)
    return projections


def _attention(rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    def maps(shift: float) -> dict[str, np.ndarray]:
        result = {}
        for layer in range(2):
            for head in range(2):
                logits = rng.normal(size=(4, 4))
                if (layer, head) == (1, 0):
                    logits[:, 0] += shift  # this head learns to look at "buying"
                matrix = np.exp(logits)
                result[f"layer {layer} head {head}"] = matrix / matrix.sum(axis=1, keepdims=True)
        return result

    return {"pre-trained": maps(0.0), "fine-tuned": maps(4.0)}


def synthetic_report_data() -> ReportData:
    rng = np.random.default_rng(7)
    return ReportData(
        title="custembed report <test>",
        run_date="2023-07-31",
        generated_at="2023-08-01T02:00:00Z",
        summary={"tables": "custembed.*", "rows read": "1,000", "rows accepted": "990", "rows rejected": "10"},
        default_classifier=CLASSIFIER,
        metrics=_metrics(),
        decile_lift=_decile_lift(),
        classifier_comparison=_classifier_comparison(),
        probes=_probes(),
        model_info=_model_info(),
        training_histories=_training_histories(),
        projections=_projections(rng),
        attention=_attention(rng),
        attention_labels=BEHAVIOURS,
        segments=_segments(),
        nextitem=_nextitem(),
        notes=["Scores use the <b>champion</b> models & the default classifier."],
        journey_metrics=_journey_metrics(),
        journey_heatmaps={("store_a", "real"): rng.random((6, 10)), ("store_a", "journeys-gpt2"): rng.random((6, 10))},
    )


def _segments() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "segment": [0, 1],
            "customers": [600, 400],
            "share": [0.6, 0.4],
            "top_actions": [["buying styler (x2.5)", "visiting store (x1.2)"], ["repairing oven (x3.1)"]],
            "buyers_share": [0.3, 0.1],
            "silhouette": [0.41, 0.41],
            "k": [2, 2],
            "model": ["bert4rec", "bert4rec"],
        }
    )


def _nextitem() -> pd.DataFrame:
    rows = [
        (model, protocol, metric, k, value)
        for model, base in (("sasrec", 0.08), ("bert4rec", 0.06))
        for protocol in ("full", "sampled-popularity")
        for metric in ("hr", "ndcg")
        for k, value in ((10, base * 2), (1, base))
    ]
    frame = pd.DataFrame(rows, columns=["model", "protocol", "metric", "k", "value"])
    return frame.assign(
        protocol_name=frame["protocol"] + " (named)",
        ci_low=frame["value"] - 0.01,
        ci_high=frame["value"] + 0.01,
        customers=1000,
    )


def _journey_metrics() -> pd.DataFrame:
    """System B rows: two models on one store, and a transfer curve on another."""
    rows = [
        ("store_a", model, 1.0, metric, value)
        for model, value in (("journeys-gpt2", 0.01), ("journeys-markov", 0.03))
        for metric in ("js_cells", "js_purchase_zones", "js_length", "shelf_crossing_rate", "out_of_store_rate")
    ]
    rows += [
        ("store_b", f"journeys-gpt2-{variant}", fraction, "js_cells", value * fraction**-0.2)
        for variant, value in (("finetuned", 0.01), ("scratch", 0.02))
        for fraction in (1.0, 0.1, 0.01)
    ]
    frame = pd.DataFrame(rows, columns=["store", "model", "train_fraction", "metric", "value"])
    frame["protocol"] = "synthetic"
    return frame


class _ReportParser(HTMLParser):
    """Collects, per data-section, the text and the <img> attributes; and every src/href."""

    def __init__(self) -> None:
        super().__init__()
        self.section: str | None = None
        self.texts: dict[str, list[str]] = {}
        self.images: dict[str, list[dict[str, str]]] = {}
        self.links: list[str] = []
        self.figures_without_caption = 0
        self._figure_open = False
        self._figure_has_caption = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        self.links += [attributes[name] for name in ("src", "href") if name in attributes]
        if tag == "section":
            self.section = attributes.get("data-section")
            self.texts.setdefault(self.section or "", [])
            self.images.setdefault(self.section or "", [])
        elif tag == "img" and self.section is not None:
            self.images[self.section].append(attributes)
        elif tag == "figure":
            self._figure_open, self._figure_has_caption = True, False
        elif tag == "figcaption":
            self._figure_has_caption = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.section = None
        elif tag == "figure":
            self.figures_without_caption += int(self._figure_open and not self._figure_has_caption)
            self._figure_open = False

    def handle_data(self, data: str) -> None:
        if self.section is not None:
            self.texts[self.section].append(data)

    def text(self, section: str) -> str:
        return " ".join(" ".join(self.texts[section]).split())


def _parse(path: str | Path) -> _ReportParser:
    parser = _ReportParser()
    parser.feed(lakefs.read_text(str(path)))
    return parser


@pytest.fixture(scope="module")
def report_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "nested" / "report.html"
    written = render_report(synthetic_report_data(), path, max_points=120, max_attention_pairs=ATTENTION_PAIRS_SHOWN)
    assert written == f"file://{path}"
    return path


def test_report_is_one_self_contained_file(report_path: Path) -> None:
    assert report_path.is_file()
    assert [entry.name for entry in report_path.parent.iterdir()] == ["report.html"]  # no temp file left over
    page = report_path.read_text(encoding="utf-8")
    links = _parse(report_path).links
    assert links, "expected images and section anchors"
    external = [link for link in links if not (link.startswith("data:image/png;base64,") or link.startswith("#"))]
    assert external == []
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, flags=re.IGNORECASE)
    assert "url(" not in page and "@import" not in page and "<script" not in page.lower()
    assert "Content-Security-Policy" in page


def test_every_section_is_present_and_rendered(report_path: Path) -> None:
    parser = _parse(report_path)
    assert list(parser.texts) == [key for key, _ in SECTIONS]
    umap_missing = "umap-learn could not be imported" in parser.text("projections")
    for key, _ in SECTIONS:
        if key == "projections" and umap_missing:
            continue
        assert "not available" not in parser.text(key), key
    page = report_path.read_text(encoding="utf-8")
    assert "custembed report &lt;test&gt;" in page
    assert "&lt;b&gt;champion&lt;/b&gt; models &amp; the default classifier" in page
    assert "<b>champion" not in page


def test_probes_show_each_source_under_every_classifier(report_path: Path) -> None:
    text = _parse(report_path).text("probes")
    assert "logistic_regression: mean AUC" in text and f"{CLASSIFIER}: mean AUC" in text
    assert all(source in text for source in SOURCES)
    assert "probes" in render_probes_without_data()


def render_probes_without_data() -> str:
    from custembed.report.sections import probes_section

    return probes_section(None)


def test_images_are_non_blank_pngs_with_alt_text_and_captions(report_path: Path) -> None:
    parser = _parse(report_path)
    expected = {
        "model-comparison": 1,  # lift bar chart
        "decile-lift": 1,  # small multiples, 3 products in one figure
        "training-curves": len(SOURCES),
        "projections": len(SOURCES),
        "attention": 1 + ATTENTION_PAIRS_SHOWN,  # layer x head overview + the pairs shown
        "journeys": 2,  # transfer curve + the heat maps of the one store with them
    }
    counts = {section: len(images) for section, images in parser.images.items() if images}
    assert counts == expected
    assert parser.figures_without_caption == 0
    for section, images in parser.images.items():
        for attributes in images:
            assert attributes.get("alt", "").strip(), section
            prefix = "data:image/png;base64,"
            assert attributes["src"].startswith(prefix)
            payload = base64.b64decode(attributes["src"][len(prefix) :], validate=True)
            assert payload.startswith(PNG_SIGNATURE)
            pixels = mpimg.imread(io.BytesIO(payload), format="png")
            assert pixels.ndim == 3 and min(pixels.shape[:2]) > 50
            assert float(pixels[..., :3].std()) > 0.01, f"a blank image in {section}"


def test_model_comparison_uses_default_classifier_and_marks_best(report_path: Path) -> None:
    page = report_path.read_text(encoding="utf-8")
    section = page[page.index('data-section="model-comparison"') : page.index('data-section="decile-lift"')]
    assert "<strong>0.817</strong>" in section  # electra wins water purifier AUC
    assert "0.695" in section and "<strong>0.695</strong>" not in section
    assert "0.999" not in section  # logistic regression rows are not the default classifier
    assert "mean over products" in section
    # mean top-10 % lift of electra: (3 + 4 + 5) / 3
    assert "<strong>4.00</strong>" in section
    assert "only 10 positives in the test set" in section


def test_attention_shows_largest_change_first_and_the_count(report_path: Path) -> None:
    text = _parse(report_path).text("attention")
    assert f"Showing {ATTENTION_PAIRS_SHOWN} of 4 layer/head pairs" in text
    headings = re.findall(r"<h3>(layer \d head \d)</h3>", report_path.read_text(encoding="utf-8"))
    assert len(headings) == ATTENTION_PAIRS_SHOWN
    assert headings[0] == "layer 1 head 0"


def test_projection_sample_is_capped_and_said(report_path: Path) -> None:
    text = _parse(report_path).text("projections")
    assert "120 of 160 customers" in text  # bert4rec: subsampled to max_points
    assert "all 90 customers given" in text  # electra: under the cap


def test_models_and_classifier_tables(report_path: Path) -> None:
    models = _parse(report_path).text("models")
    assert "13.5 M (13,500,000)" in models and "1 h 00 min" in models and "7 min 30 s" in models
    comparison = _parse(report_path).text("classifier-comparison")
    for classifier in ("random_forest", "xgboost", "logistic_regression"):
        assert classifier in comparison
    assert "water_purifier" in comparison and "6.88" in comparison
    page = report_path.read_text(encoding="utf-8")
    section = page[page.index('data-section="classifier-comparison"') : page.index('data-section="models"')]
    assert "<strong>0.800</strong>" in section and "<strong>6.88</strong>" in section  # random forest's AUC, lift
    assert "<strong>0.040</strong>" in section  # logistic regression's precision
    assert "<strong>0.710</strong>" not in section  # all classifiers tie on accuracy: nothing to highlight


def test_training_curves_mark_the_kept_weights(report_path: Path) -> None:
    text = _parse(report_path).text("training-curves")
    assert "custembed-bert4rec version 2" in text
    # the recorded step, with the value logged last for it (not the 9.9 a resumed run logged before)
    assert "the weights kept, step 30, validation loss 3.0000, as the training recorded" in text
    assert "the weights kept, step 30, validation loss 3.0000, the lowest validation loss" in text  # electra
    assert "the 4 validations" in text and "not available" not in text


def test_training_curves_say_in_one_line_when_there_is_no_history() -> None:
    from custembed.report.sections import training_curves_section

    page = training_curves_section(
        [
            TrainingHistory("bert4rec", _history(ranking=True), kept_step=30),
            TrainingHistory("coles", pd.DataFrame(), missing="no MLflow run found"),
            TrainingHistory("electra", _history(ranking=False).query("metric == 'val_accuracy'"), origin="run r1"),
        ]
    )
    lines = re.findall(r'<p class="na">(.*?)</p>', page)
    assert lines == [
        "not available: coles: no MLflow run found",
        "not available: electra: no train_loss or val_loss in the MLflow history of run r1",
    ]
    assert page.count("<img") == 1 and "<h3>bert4rec</h3>" in page
    assert training_curves_section([]) == '<p class="na">not available: no training runs were given</p>'


def test_training_history_without_its_columns_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"training_histories\['x'\].history lacks column.*step"):
        TrainingHistory("x", pd.DataFrame({"metric": ["val_loss"], "value": [1.0]}))


def test_segments_and_nextitem_tables(report_path: Path) -> None:
    parser = _parse(report_path)
    segments = parser.text("segments")
    assert "k = 2 chosen by silhouette (0.410)" in segments and "repairing oven (x3.1)" in segments
    nextitem = parser.text("next-item")
    assert "sampled-popularity (named)" in nextitem and "0.1600 [0.1500, 0.1700]" in nextitem
    assert nextitem.index("HR@1") < nextitem.index("HR@10")


@pytest.mark.parametrize("empty", ["none", "empty"])
def test_empty_inputs_render_not_available_notes(tmp_path: Path, empty: str) -> None:
    if empty == "none":
        data = ReportData()
    else:
        data = ReportData(
            summary={},
            metrics=pd.DataFrame(),
            decile_lift=pd.DataFrame(),
            classifier_comparison=pd.DataFrame(),
            model_info=pd.DataFrame(),
            projections={},
            attention={},
            attention_labels=[],
            segments=pd.DataFrame(),
            nextitem=pd.DataFrame(),
            notes=[],
        )
    path = render_report(data, tmp_path / "empty.html")
    parser = _parse(path)
    assert list(parser.texts) == [key for key, _ in SECTIONS]
    for key, _ in SECTIONS:
        assert "not available:" in parser.text(key), key
    assert not any(parser.images.values())


def test_unknown_default_classifier_is_a_note_naming_it(tmp_path: Path) -> None:
    data = replace(synthetic_report_data(), default_classifier="svm", projections=None, attention=None)
    parser = _parse(render_report(data, tmp_path / "report.html"))
    text = parser.text("model-comparison")
    assert "not available: no model metrics rows for the default classifier 'svm'" in text
    assert "random_forest" in text  # says which classifiers there are
    assert "not available" in parser.text("decile-lift")


def test_missing_column_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="metrics lacks column.*top10_lift"):
        ReportData(metrics=_metrics().drop(columns=["top10_lift"]))


def test_attention_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="attention_labels has 3 names"):
        ReportData(attention={"pre-trained": {"layer 0 head 0": np.eye(4)}}, attention_labels=BEHAVIOURS[:3])
    with pytest.raises(ValueError, match=r"is_buyer must have shape \(5,\)"):
        ReportData(projections={"x": (np.zeros((5, 3)), np.zeros(4, dtype=bool))})


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report_path: Path, tmp_path: Path) -> None:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium to run the browser check")
    common = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    screenshot = tmp_path / "shot.png"
    shot = subprocess.run(
        common + [f"--screenshot={screenshot}", "--window-size=1280,4000", report_path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.returncode == 0, shot.stderr[-3000:]
    _assert_no_page_errors(shot.stderr)
    pixels = mpimg.imread(screenshot, format="png")
    assert pixels.shape[:2] == (4000, 1280)
    assert float(pixels[..., :3].std()) > 0.01

    dom = subprocess.run(common + ["--dump-dom", report_path.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-3000:]
    _assert_no_page_errors(dom.stderr)
    page = report_path.read_text(encoding="utf-8")
    assert dom.stdout.count("<img ") == page.count("<img ") > 0
    assert dom.stdout.count('data-section="') == len(SECTIONS)


def _assert_no_page_errors(stderr: str) -> None:
    """The page has no script, so any console message (logged as INFO:CONSOLE whatever its level) is a fault:
    a blocked load (Content-Security-Policy), a failed resource, an uncaught error."""
    page_messages = [line for line in stderr.splitlines() if re.search(r":CONSOLE[:(]", line) or "Uncaught" in line]
    assert page_messages == []


def test_model_comparison_names_the_protocol_and_shows_intervals_and_significance() -> None:
    from custembed.comparison import COMPARISON_LINE_VALUES, comparison_lines, model_comparison
    from custembed.report.sections import model_comparison_section

    metrics = _metrics()
    metrics = metrics[metrics["classifier"] == CLASSIFIER].assign(
        protocol="customer_disjoint",
        bootstrap=200,
        auc_lo=lambda f: f["auc"] - 0.04,
        auc_hi=lambda f: f["auc"] + 0.04,
        auc_diff=np.where(metrics[metrics["classifier"] == CLASSIFIER]["source"] == "electra", np.nan, -0.1),
        auc_diff_lo=-0.15,
        auc_diff_hi=-0.05,
        auc_diff_significant=lambda f: f["auc_diff"].notna(),
    )
    html = model_comparison_section(metrics, CLASSIFIER, {s: "#000000" for s in SOURCES})
    assert "held-out customers" in html and "200 replicates" in html
    first = metrics.iloc[0]
    assert f"{first['auc']:.3f} [{first['auc_lo']:.3f}, {first['auc_hi']:.3f}] *" in html
    lines = comparison_lines(
        model_comparison(
            metrics,
            classifier=CLASSIFIER,
            values=COMPARISON_LINE_VALUES,
        ),
        classifier=CLASSIFIER,
        day="2023-07-31",
        protocol="same_customers",
    )
    assert "paper's protocol" in lines[0]
    assert any(line.endswith("best") for line in lines) and any(line.endswith("-0.050] *") for line in lines)


def test_training_history_reads_the_run_of_the_version_trained_that_day(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from custembed.jobs.report import training_history
    from custembed.tracking import TAG_RUN_DATE, Tracking

    tracking = Tracking(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="t", artifact_root=str(tmp_path / "a"))
    encoder_dir = tmp_path / "encoder"
    encoder_dir.mkdir()
    (encoder_dir / "weights.bin").write_bytes(b"0")
    history = _history(ranking=True)
    run_id, _ = tracking.open_run("bert4rec/2023-07-31/k", {})
    client = tracking.client()
    for index, row in enumerate(history.itertuples(index=False)):  # the resumed run's 9.9 logged first
        client.log_metric(run_id, row.metric, row.value, timestamp=1_000_000 + index, step=row.step)
    client.log_metric(run_id, "lr", 1e-3, step=40)  # not a curve the report draws
    tracking.finish_run(
        run_id, {"weights_step": 30, "val_loss": 3.0}, str(encoder_dir), "bert4rec", tags={TAG_RUN_DATE: "2023-07-31"}
    )

    found = training_history(tracking, "bert4rec", "2023-07-31", "champion")
    assert found.missing == "" and found.kept_step == 30
    assert f"custembed-bert4rec version 1 (trained on 2023-07-31), MLflow run {run_id}" == found.origin
    assert set(found.history["metric"]) == {"train_loss", "val_loss", "hr_at_10", "ndcg_at_10"}
    val_loss = found.history[found.history["metric"] == "val_loss"]
    assert val_loss["value"].tolist() == [9.9, 4.0, 3.2, 3.0, 3.3]  # in logging order
    assert len(found.history) == len(history)

    # another day, no alias given to the version: one reason, no history
    other = training_history(tracking, "bert4rec", "2023-08-01", "champion")
    assert other.history.empty
    assert (
        other.missing == "no version of custembed-bert4rec was trained on 2023-08-01 and none holds the alias champion"
    )
    assert training_history(tracking, "coles", "2023-07-31", "champion").missing.startswith(
        "no version of custembed-coles"
    )
