"""The report's next-item section: CPL4Rec's parameter-efficiency table beside the models' figures."""

from __future__ import annotations

import pandas as pd

from custembed.report.sections import nextitem_section


def nextitem_rows(models: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "model": model,
                "protocol": "full",
                "protocol_name": "full ranking",
                "metric": "hr",
                "k": 10,
                "value": hr,
                "ci_low": hr - 0.01,
                "ci_high": hr + 0.01,
                "customers": 500,
            }
            for model, hr in models.items()
        ]
    )


def adaptation_rows() -> pd.DataFrame:
    rows = [
        ("cpl4rec", "full", 20_000),
        ("cpl4rec_no_prompts", "no_prompts", 4_300),
        ("cpl4rec_finetune", "finetune", 95_000),
    ]
    return pd.DataFrame(
        [
            {
                "model": model,
                "variant": variant,
                "trainable_parameters": trainable,
                "total_parameters": 100_000,
                "trainable_share": trainable / 100_000,
                "train_seconds": 42.0,
                "steps": 300,
                "backbone": "cpl4rec_pretrain",
                "backbone_version": "3",
            }
            for model, variant, trainable in rows
        ]
    )


def test_the_section_shows_the_variants_beside_the_baselines_and_their_parameter_efficiency() -> None:
    metrics = nextitem_rows({"sasrec": 0.31, "cpl4rec": 0.4123, "cpl4rec_no_prompts": 0.25, "cpl4rec_finetune": 0.43})
    page = nextitem_section(metrics, adaptation_rows())
    assert "sasrec" in page and "0.4123 [0.4023, 0.4223]" in page
    assert "cpl4rec_pretrain (version 3)" in page
    # the last table: sorted by trainable parameters, with the share and the full-ranking HR@10 of each
    table = page[page.rindex("<table") :]
    assert table.index(">no_prompts<") < table.index(">full<") < table.index(">finetune<")
    assert "20.0%" in page and "95.0%" in page and "4.3 k (4,300)" in page and "0.4300" in page


def test_without_ablations_the_section_is_unchanged() -> None:
    metrics = nextitem_rows({"sasrec": 0.31})
    assert nextitem_section(metrics) == nextitem_section(metrics, pd.DataFrame())
    assert "CPL4Rec" not in nextitem_section(metrics)
