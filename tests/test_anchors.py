"""docs/anchors.yaml and bench/anchors.py: published numbers, our settings, stated differences."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("anchors", ROOT / "bench" / "anchors.py")
anchors = importlib.util.module_from_spec(spec)
spec.loader.exec_module(anchors)


def test_every_anchor_names_source_settings_and_tolerance():
    items = yaml.safe_load((ROOT / "docs" / "anchors.yaml").read_text())["anchors"]
    published = {a["name"]: a["published"] for a in items}
    assert published["all-MiniLM-L6-v2 on SciFact test, NDCG@10"] == 0.6451
    assert published["BM25 flat on SciFact test, NDCG@10"] == 0.6789
    assert published["BM25 multifield on SciFact test, NDCG@10"] == 0.6647
    for a in items:
        assert a["source"] and a["ours"] and a["metric"] == "ndcg@10" and 0 < a["tolerance"] < 0.05


def test_compare_states_the_difference_and_the_verdict():
    items = [
        {"name": "a", "published": 0.6451, "measure": "m", "metric": "ndcg@10", "tolerance": 0.002},
        {"name": "b", "published": 0.6789, "measure": "b", "metric": "ndcg@10", "tolerance": 0.002},
        {"name": "c", "published": 0.5, "measure": "missing", "metric": "ndcg@10", "tolerance": 0.1},
    ]
    measured = {"m": {"metrics": {"ndcg@10": 0.64508}}, "b": {"metrics": {"ndcg@10": 0.6762}}}
    rows = anchors.compare(items, measured)
    assert abs(rows[0]["difference"] - (0.64508 - 0.6451)) < 1e-12 and rows[0]["within"] is True
    assert abs(rows[1]["difference"] + 0.0027) < 1e-12 and rows[1]["within"] is False  # 0.0027 > 0.002
    assert rows[2]["ours_value"] is None and rows[2]["within"] is None
    table = anchors.markdown(rows)
    assert "| a | 0.6451 | 0.6451 | -0.0000 |" in table and "**no**" in table and "not measured" in table
