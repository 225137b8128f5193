"""The integrations' tests run in CI rather than skip (issue 23): `make test` installs the `integrations`
extra, and this test fails when a package it names is missing, instead of letting the Lightning, Hugging Face
and pre-commit tests skip without a word."""

import importlib.metadata
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]


def _distribution_name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group(0)


def test_the_integrations_extra_names_the_packages_the_skipping_tests_need():
    names = {_distribution_name(requirement).lower() for requirement in EXTRAS["integrations"]}
    assert names == {"lightning", "transformers", "accelerate", "pre-commit"}


def test_every_package_of_the_integrations_extra_is_installed():
    missing = []
    for requirement in EXTRAS["integrations"]:
        name = _distribution_name(requirement)
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    assert not missing, (
        f"{', '.join(missing)} not installed, so the integrations' tests would skip: "
        'pip install -e ".[integrations]" (make test installs it)'
    )


def test_make_test_installs_the_integrations_extra():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    extras = re.search(r'-e "\.\[([a-z,]+)\]"', makefile).group(1).split(",")
    assert "integrations" in extras
