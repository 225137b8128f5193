"""Features that need a newer torch than the floor (issue 23): the version is read as (major, minor), and an
older torch gets one sentence naming both versions and the way out. The features' own tests (--fsdp in
test_distributed.py, torch.export archives in test_hostile_loading.py) run the real call sites."""

import pytest
import torch

from gradcheck_cli.common.errors import GradcheckError, InvalidOptionError
from gradcheck_cli.measure.torch_compat import TorchFeature, torch_version


@pytest.mark.parametrize(
    ("version", "release"),
    [("2.4.1+cu121", (2, 4)), ("2.13.0+cpu", (2, 13)), ("2.6.0a0+git1234abc", (2, 6)), ("3.0.0", (3, 0))],
)
def test_torch_version_is_the_major_and_minor_release(monkeypatch, version, release):
    monkeypatch.setattr(torch, "__version__", version)
    assert torch_version() == release


def test_an_older_torch_gets_one_sentence_with_both_versions_and_the_way_out(monkeypatch):
    feature = TorchFeature("--thing (Thing)", (2, 6))
    monkeypatch.setattr(torch, "__version__", "2.5.1+cu121")
    assert not feature.available()
    with pytest.raises(InvalidOptionError) as caught:
        feature.require("upgrade torch, or drop --thing", InvalidOptionError)
    assert (
        str(caught.value)
        == "--thing (Thing) needs torch >= 2.6; this is torch 2.5.1+cu121: upgrade torch, or drop --thing."
    )


@pytest.mark.parametrize("version", ["2.6.0", "2.10.1", "3.0.0"])
def test_the_minimum_and_anything_newer_pass(monkeypatch, version):
    # 2.10 is newer than 2.6: compared as numbers, not as text
    feature = TorchFeature("--thing (Thing)", (2, 6))
    monkeypatch.setattr(torch, "__version__", version)
    assert feature.available()
    feature.require("unused")


def test_the_error_is_a_gradcheck_error_unless_the_call_site_says_otherwise(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.4.1")
    with pytest.raises(GradcheckError):
        TorchFeature("loading a thing", (2, 13)).require("upgrade torch")
