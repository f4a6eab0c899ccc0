"""The run's front page: verdict badges, a sample thumbnail, key numbers with CI and reference,
links that resolve, the full key list on a second page, byte-reproducible, and rendered in a real
headless browser."""

import html.parser
import json
import shutil
import tempfile
from pathlib import Path

from genlab.ops.dashboard import key_rows
from genlab.ops.pipeline import NOTEBOOKS
from genlab.ops.reports import write_index


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.images = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "href" in attrs:
            self.hrefs.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs["src"])


def test_key_rows_pick_ci_reference_and_alternatives(headline_run):
    doc = json.loads((headline_run / "02_evaluate.json").read_text())
    rows = {r["metric"]: r for r in key_rows("02_evaluate", doc)}
    assert rows["fd"]["ci"] == (doc["fd_ci_low"], doc["fd_ci_high"])
    assert rows["fd"]["reference"] == "floor 6.24 · noise 72.79"
    # conditional_accuracy and tstr_accuracy are null for this unconditional run
    assert "tstr_pseudo_label_accuracy" in rows and "conditional_accuracy" not in rows
    drift = json.loads((headline_run / "04_drift_study.json").read_text())
    arl = next(r for r in key_rows("04_drift_study", drift) if r["metric"] == "arl0_measured")
    assert arl["reference"] == "target 200"
    unknown = key_rows("05_other", {"a": 1.0, "a_ci_low": 0.5, "a_ci_high": 1.5, "b": 2})
    assert [r["metric"] for r in unknown] == ["a"]


def test_front_page_badges_thumbnail_links_and_bytes(headline_run, chromium):
    from genlab.operations.card import write_model_card

    write_model_card(headline_run)
    (headline_run / "gate.json").write_text(json.dumps({
        "rules": ["fd<=1"], "passed": False, "promoted": None,
        "results": [{"run": "run-a", "rule": "fd<=1", "status": "FAIL", "value": 19.2}]}))
    index = write_index(headline_run, list(NOTEBOOKS.values()), name="run-a")
    page = index.read_text()
    assert "privacy: <b>low</b>" in page and "gate: <b>failed (1 of 1)</b>" in page
    assert "drift (monitor): <b>alarm</b>" in page  # the operations scenario's monitor
    assert "served: <b>fp32 · genlab-model v2 @champion</b>" in page
    assert "<td>detection_delay_requests</td><td class='num'>136</td>" in page
    assert "<td>fd</td><td class='num'>19.18</td><td class='num'>[16.82, 22.21]</td>" in page
    assert "mia_auc_max" in page and "fd_infinity_baseline" not in page  # the long list is apart
    keys = (headline_run / "keys.html").read_text()
    assert "fd_infinity_baseline" in keys and "dcr_n_distinct_nearest" in keys

    parser = _Links()
    parser.feed(page)
    assert set(parser.hrefs) >= {"keys.html", "model_card.html", "01_train.html",
                                 "04_drift_study.html"}
    assert all((headline_run / h).exists() for h in parser.hrefs), parser.hrefs
    assert len(parser.images) == 1 and parser.images[0].startswith("data:image/png;base64,")

    first = index.read_bytes()
    write_index(headline_run, list(NOTEBOOKS.values()), name="run-a")
    assert index.read_bytes() == first and (headline_run / "keys.html").read_text() == keys

    dom = chromium("--dump-dom", index.as_uri())
    assert dom.returncode == 0 and dom.stdout.count("<section>") == 5, dom.stderr[-500:]
    assert "privacy: <b>low</b>" in dom.stdout
    shot = headline_run / "index.png"
    chromium("--window-size=1200,1000", f"--screenshot={shot}", index.as_uri())
    assert shot.stat().st_size > 20_000  # text, badges and the thumbnail, not a blank page
    shutil.copy(shot, Path(tempfile.gettempdir()) / "genlab-index-screenshot.png")


def test_front_page_without_training_notebook_or_gate(headline_run):
    (headline_run / "01_train.ipynb").unlink()
    (headline_run / "03_privacy_audit.html").unlink()
    page = write_index(headline_run, list(NOTEBOOKS.values())).read_text()
    assert "<img" not in page and "03_privacy_audit.html" not in page
    assert "gate:" not in page and "model_card.html" not in page
