"""The wheel and the sdist a user installs from (issue 23): both build with every warning an error, pass
`twine check --strict`, and carry the metadata (SPDX license expression, license file, Python floor, the
`gradcheck` command) and the files (the whole package; README, LICENSE and CHANGELOG in the sdist) they
promise. `build` and `twine` come with the dev extra, so `make test` runs this.
"""

import email.parser
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
# What a clone has and a build must not see: the venv, git, earlier build outputs and caches.
NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".venv", ".git", "build", "dist", "site", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache"
)


def build_dists(source: Path, outdir: Path) -> subprocess.CompletedProcess:
    """`python -m build` without isolation (the venv's setuptools, no download): the sdist first, then the wheel
    built from that sdist, so a file the sdist leaves out breaks the wheel too. -W error turns the warnings
    build forwards from the backend into errors, PYTHONWARNINGS=error those raised in the backend process
    itself; PYTHONDONTWRITEBYTECODE is dropped because it makes setuptools log a "byte-compiling is disabled"
    warning of its own."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONWARNINGS"] = "error"
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "build", "--no-isolation", "--outdir", str(outdir), str(source)],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    # A copy, because building in place writes build/ and gradcheck_cli.egg-info/ into the working tree.
    source = tmp_path_factory.mktemp("clone") / "gradcheck"
    shutil.copytree(ROOT, source, ignore=NOT_IN_A_CLONE)
    outdir = tmp_path_factory.mktemp("dist")
    built = build_dists(source, outdir)
    log = built.stdout + built.stderr
    assert built.returncode == 0, log
    # setuptools' own complaints (a MANIFEST.in pattern matching nothing, missing metadata) are log lines,
    # not Python warnings: the build is clean only without them too.
    assert not re.search(r"^\s*warning\b", log, re.I | re.M), log
    (wheel,) = outdir.glob("*.whl")
    (sdist,) = outdir.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist, "source": source}


def package_modules(source: Path) -> set[str]:
    return {path.relative_to(source).as_posix() for path in (source / "gradcheck_cli").rglob("*.py")}


def test_twine_check_strict_passes_the_wheel_and_the_sdist(dists):
    checked = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(dists["wheel"]), str(dists["sdist"])],
        env={**os.environ, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("PASSED") == 2, checked.stdout


def test_the_wheel_declares_the_license_the_python_floor_and_the_command(dists):
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = set(wheel.namelist())
        (info,) = {name.split("/")[0] for name in names if name.split("/")[0].endswith(".dist-info")}
        metadata = email.parser.Parser().parsestr(wheel.read(f"{info}/METADATA").decode())
        license_text = wheel.read(f"{info}/licenses/LICENSE").decode()
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    # The deprecated forms of the same fact, which PEP 639 says not to give beside the expression.
    assert metadata["License"] is None
    assert not [c for c in metadata.get_all("Classifier", []) if c.startswith("License ::")]
    assert license_text == (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Copyright (c) 2026 the gradcheck authors" in license_text
    assert metadata["Requires-Python"] == PROJECT["requires-python"]
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert re.search(r"^\[console_scripts\]\ngradcheck = gradcheck_cli\.cli\.main:main$", entry_points, re.M), (
        entry_points
    )
    assert {name for name in names if name.endswith(".py")} == package_modules(dists["source"])


def test_the_sdist_carries_the_package_readme_license_and_changelog(dists):
    with tarfile.open(dists["sdist"]) as sdist:
        members = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
        top = sdist.getnames()[0].split("/")[0]
        pkg_info = email.parser.Parser().parsestr(sdist.extractfile(f"{top}/PKG-INFO").read().decode())
    assert {"LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "PKG-INFO"} <= members
    assert {name for name in members if name.startswith("gradcheck_cli/")} >= package_modules(dists["source"])
    # The test suite needs the whole repository (golden files, docs, examples): none of it rather than part.
    assert not [name for name in members if name.startswith("tests/")]
    assert pkg_info["License-Expression"] == "MIT"
