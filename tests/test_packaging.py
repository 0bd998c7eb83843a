"""Install paths: CPU machines get torch's CPU build and faiss-cpu, GPU machines faiss-gpu, never both."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pins(name: str) -> dict[str, str]:
    lines = (ROOT / "constraints" / name).read_text().splitlines()
    return dict(line.split("==", 1) for line in lines if "==" in line and not line.startswith("#"))


def test_faiss_build_is_chosen_by_extra_and_constraints():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("faiss") for d in project["dependencies"])
    extras = project["optional-dependencies"]
    assert any(d.startswith("faiss-gpu") for d in extras["gpu"])
    assert "llara[faiss-cpu]" in extras["cpu"] and any(d.startswith("faiss-cpu") for d in extras["faiss-cpu"])
    assert not any("faiss" in d for d in extras["all"])
    gpu, cpu = pins("gpu.txt"), pins("cpu.txt")
    assert "faiss-gpu" in gpu and "faiss-cpu" not in gpu and "torch" not in gpu
    assert "faiss-cpu" in cpu and "faiss-gpu" not in cpu and cpu["torch"] == "2.13.0"


def test_readme_and_docs_name_no_path_of_one_machine():
    """Every command works from the repository root of any clone (issue 9, item 8)."""
    import re

    bad = re.compile(r"(?<![\w.])/(work|home|root|Users)/")
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            assert not bad.search(line), f"{path.name}:{n}: {line.strip()}"
