"""The project runs from any clone: no source file reaches outside the repository for its data (the public
traces live in simulations/data, each one listed with its source and checksum in simulations/data/README.md).
Pure: reads the working tree (the file list from git when there is one)."""

from __future__ import annotations

import fnmatch
import hashlib
import re
import subprocess
import tomllib
from pathlib import Path

import simulations
from simulations import workloads

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "simulations" / "data"
SOURCE_SUFFIXES = {".py", ".yaml", ".yml", ".toml", ".sh", ".cfg", ".ini"}
SOURCE_NAMES = {"Makefile", "Dockerfile"}
SKIP_DIRS = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", ".hypothesis", "node_modules"}
# data outside the repository: a ../shared path, or "shared" joined with "data" in any spelling
OUTSIDE = [
    re.compile(r"\.\./+shared"),
    re.compile(r"\bshared[/\\]+data\b"),
    re.compile(r"""["']shared["']\s*/|/\s*["']shared["']"""),           # Path(...) / "shared" / ...
    re.compile(r"""join\([^)]*["']shared["']"""),                         # os.path.join(..., "shared", ...)
]


def source_files() -> list[Path]:
    """Tracked and new (not ignored) files from git; without git, a walk of the tree."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, check=True, timeout=60).stdout.decode()
        paths = [ROOT / p for p in out.split("\0") if p]
    except (OSError, subprocess.SubprocessError):
        paths = [p for p in ROOT.rglob("*") if not SKIP_DIRS & set(p.relative_to(ROOT).parts)]
    return sorted(p for p in paths if p.is_file() and (p.suffix in SOURCE_SUFFIXES or p.name in SOURCE_NAMES)
                  and p.resolve() != Path(__file__).resolve())


def test_no_source_file_reads_data_from_outside_the_repository():
    files = source_files()
    assert any(p.name == "workloads.py" for p in files) and any(p.name == "Makefile" for p in files)
    hits = []
    for path in files:
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if any(rx.search(line) for rx in OUTSIDE):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, "data must come from simulations/data, not from beside the repository:\n" + "\n".join(hits)


def test_the_bundled_traces_are_found_inside_the_package():
    assert workloads.DATA == Path(simulations.__file__).resolve().parent / "data" == DATA
    for name, path in workloads.SHORT_NAMES.items():
        assert path.is_relative_to(DATA) and workloads.data_file(name) == path and path.stat().st_size > 0, name


def data_files() -> list[Path]:
    return sorted(p for p in DATA.rglob("*") if p.is_file() and p.name != "README.md"
                  and "__pycache__" not in p.parts)


def test_every_data_file_is_listed_in_the_data_readme_with_its_checksum():
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    files = data_files()
    assert {p.name for p in files} >= {"openb_node_list_gpu_node.csv", "openb_pod_list_default.csv",
                                      "openb_pod_list_multigpu50.csv", "AzureLLMInferenceTrace_code.csv"}
    for path in files:
        rel = path.relative_to(DATA).as_posix()
        row = next((line for line in readme.splitlines() if f"`{rel}`" in line and "|" in line), None)
        assert row is not None, f"simulations/data/README.md does not list {rel} (with its sha256)"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest in row, f"{rel}: sha256 {digest} is not the one the README records (the file changed?)"
        assert f"`{path.name}`" in readme.split(f"## {rel.split('/')[0]}/", 1)[-1], \
            f"{rel}: no entry (source, columns, use) under its folder's section"
    for section in ("alibaba-openb-2023", "azure-llm-2023"):
        body = readme.split(f"## {section}/", 1)[1].split("\n## ", 1)[0]
        assert "Source:" in body and "License: CC BY 4.0" in body and "Paper:" in body, section


def test_the_wheel_would_carry_the_data_files():
    """Package data globs (relative to simulations/) must match every data file, or a non-editable install
    (the container image) has no traces."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = cfg["tool"]["setuptools"]["package-data"]["simulations"]
    for path in data_files() + [DATA / "README.md"]:
        rel = path.relative_to(ROOT / "simulations").as_posix()
        assert any(fnmatch.fnmatch(rel, g) and rel.count("/") == g.count("/") for g in globs), \
            f"pyproject.toml package-data for simulations does not include {rel}"
