"""The model card is written from the headline JSON only: a changed value changes the card."""

import json

import pytest

from genlab.operations.card import card_markdown, write_model_card


def _set(run, stem, **values):
    path = run / f"{stem}.json"
    doc = json.loads(path.read_text())
    doc.update(values)
    path.write_text(json.dumps(doc))


def test_card_sections_and_numbers(headline_run):
    text = card_markdown(headline_run)
    for section in ("## Intended use and limits", "## Data provenance", "## Key metrics",
                    "## Privacy", "## Drift monitoring", "## Gate and registry", "## Serving"):
        assert section in text
    evaluate = json.loads((headline_run / "02_evaluate.json").read_text())
    assert f"`{evaluate['provenance']['data_fingerprint']}`" in text
    assert "| fd | 19.18 | [16.82, 22.21] | floor 6.24 · noise 72.79 |" in text
    assert "members 896, val 179, holdout_a 360, holdout_b 362" in text
    assert "verdict: **low**" in text and "DP-SGD ε (accountant): n/a (trained without DP" in text
    assert "window 50 records, threshold calibrated to ARL₀ = 200 requests" in text
    assert "served variant: fp32 · genlab-model v2 @champion" in text
    assert "drift alarm True" in text and "detection delay 136 requests" in text


def test_changed_json_value_changes_the_card(headline_run):
    before = card_markdown(headline_run)
    _set(headline_run, "02_evaluate", fd=42.5)
    _set(headline_run, "03_privacy_audit", privacy_verdict="high")
    _set(headline_run, "04_drift_study", arl0_target=500)
    after = card_markdown(headline_run)
    assert after != before
    assert "| fd | 42.5 |" in after and "| fd | 19.18 |" not in after
    assert "verdict: **high**" in after and "do not share its samples" in after
    assert "ARL₀ = 500 requests" in after


def test_card_files_and_html(headline_run):
    write_model_card(headline_run, name="my-run")
    md = (headline_run / "model_card.md").read_text()
    page = (headline_run / "model_card.html").read_text()
    assert md.startswith("# Model card: my-run")
    assert "<table>" in page and "<h2>Privacy</h2>" in page and "19.18" in page
    first = page
    write_model_card(headline_run, name="my-run")
    assert (headline_run / "model_card.html").read_text() == first  # same JSON, same bytes


def test_card_needs_the_training_report(headline_run):
    (headline_run / "01_train.json").unlink()
    with pytest.raises(FileNotFoundError, match="no 01_train.json"):
        card_markdown(headline_run)
