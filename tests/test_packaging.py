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


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PROJECT_BUILD = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
IMPORT_NAME = {"pyyaml": "yaml", "pytrec-eval-terrier": "pytrec_eval", "PyStemmer": "Stemmer",
               "faiss-cpu": "faiss", "faiss-gpu": "faiss", "sentence-transformers": "sentence_transformers"}  # fmt: skip
# imported only where an extra is installed (a GPU index, DeepSpeed, MTEB, figures)
OPTIONAL = {"faiss", "deepspeed", "mteb", "sentence_transformers", "matplotlib"}
NOT_IMPORTED = {"accelerate"}  # the transformers Trainer needs it; no module imports it itself


def requirement_module(requirement: str) -> str:
    import re

    name = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]
    return IMPORT_NAME.get(name, name.replace("-", "_"))


def third_party_imports() -> set[str]:
    import ast
    import sys

    found = set()
    for path in (ROOT / "llara").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "llara"}


def test_base_dependencies_are_what_the_package_imports():
    """scipy (llara.tables) was only in the `workflow` extra; a base dependency nothing imports is
    dead weight on every install (issue 18, README section)."""
    base = {requirement_module(r) for r in PROJECT["dependencies"]}
    imported = third_party_imports()
    assert imported - OPTIONAL <= base, f"imported but not a base dependency: {imported - OPTIONAL - base}"
    assert base - imported <= NOT_IMPORTED, (
        f"base dependencies nothing imports: {base - imported - NOT_IMPORTED}"
    )
    extras = {requirement_module(r) for reqs in PROJECT["optional-dependencies"].values() for r in reqs}
    assert OPTIONAL <= extras


def test_license_is_an_spdx_string():
    """The TOML-table form is deprecated: setuptools warned on every install."""
    assert PROJECT["license"] == "MIT"
    assert any(r.replace(" ", "").startswith("setuptools>=77") for r in PROJECT_BUILD["requires"])


def test_gpu_constraints_are_the_cpu_pins_without_torch_and_faiss_cpu():
    gpu, cpu = pins("gpu.txt"), pins("cpu.txt")
    assert {k: v for k, v in cpu.items() if k not in ("torch", "faiss-cpu")} == {
        k: v for k, v in gpu.items() if k != "faiss-gpu"
    }


def test_make_setup_gpu_installs_cuda_torch_first_then_the_project():
    import subprocess

    def dry(*args: str) -> list[str]:
        done = subprocess.run(
            ["make", "-n", "-C", str(ROOT), "setup-gpu", *args], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return [line for line in done.stdout.splitlines() if not line.startswith("make")]

    lines = dry()
    torch = lines.index(".venv/bin/pip install --index-url https://download.pytorch.org/whl/cu124 torch")
    project = lines.index('.venv/bin/pip install -c constraints/gpu.txt -e ".[gpu,all]"')
    assert lines[0] == "python3 -m venv .venv" and torch < project
    assert lines[-1] == "touch .venv/.gpu .venv/.installed"  # `make grid` then uses it as it is
    index = "https://download.pytorch.org/whl/cu121"
    assert f".venv-gpu/bin/pip install --index-url {index} torch" in dry(
        f"TORCH_INDEX={index}", "VENV=.venv-gpu"
    )
