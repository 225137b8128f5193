"""Import failures say where they happened and what to do (issue 22, item 8).

A failing import inside an installed package used to read "Install it, or add its folder with --path",
naming the package's own missing dependency as if the user's file imported it, and hiding the error the
package raised. Each package here is written to a temporary "site" folder with a ``.dist-info`` beside it,
so ``importlib.metadata`` sees it as installed, exactly as pip leaves one in site-packages.
"""

import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gradcheck_cli.cli.main import app
from gradcheck_cli.common.errors import GradcheckError
from gradcheck_cli.load.loading import load_target

MODEL = "import torch\nimport {module}\n\nmodel = torch.nn.Linear(8, 4)\n"


def write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def install(site: Path, package: str, init: str, distribution: str | None = None) -> None:
    """A package as pip installs it: its folder, and a .dist-info naming the distribution and its top level."""
    distribution = distribution or package
    write(site, f"{package}/__init__.py", init)
    info = site / f"{distribution.replace('-', '_')}-1.0.dist-info"
    write(info, "METADATA", f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
    write(info, "top_level.txt", f"{package}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A site-packages folder on sys.path; the user's project is in tmp_path/project, the working folder."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    yield folder
    for name in [name for name in sys.modules if name.startswith("gc_test_")]:
        del sys.modules[name]


def scan_error(*args: str) -> str:
    """The one sentence a scan that cannot import its target ends with: exit 2, no traceback."""
    result = CliRunner().invoke(app, ["scan", *args], env={"COLUMNS": "300", "NO_COLOR": "1"})
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return " ".join(result.stderr.split())


def test_missing_dependency_of_an_installed_package_names_the_package_not_path(site):
    install(site, "gc_test_brokenlib", "import gc_test_missing_dependency\n", distribution="gc-test-broken-lib")
    Path("model.py").write_text(MODEL.format(module="gc_test_brokenlib"))
    message = scan_error("model.py")
    assert (
        "model.py:2 imports `gc_test_brokenlib`, which failed in gc_test_brokenlib, line 1: ModuleNotFoundError: "
        "No module named 'gc_test_missing_dependency'. Install the package that provides "
        "`gc_test_missing_dependency`, which gc_test_brokenlib needs, or upgrade gc_test_brokenlib: "
        "pip install --upgrade gc-test-broken-lib."
    ) in message
    assert "--path" not in message


def test_package_raising_its_own_import_error_is_quoted_with_its_cause(site):
    init = """\
        try:
            raise OSError("libfoo.so.2: cannot open shared object file")
        except OSError:
            raise ImportError("gc_test_fancylib needs libfoo >= 2")
    """
    install(site, "gc_test_fancylib", init, distribution="gc-test-fancy")
    Path("model.py").write_text(MODEL.format(module="gc_test_fancylib"))
    message = scan_error("model.py")
    assert (
        "model.py:2 imports `gc_test_fancylib`, which failed in gc_test_fancylib, line 4: ImportError: "
        "gc_test_fancylib needs libfoo >= 2 (from OSError: libfoo.so.2: cannot open shared object file). "
        "Do what the message asks, or reinstall gc_test_fancylib: pip install --force-reinstall gc-test-fancy."
    ) in message
    assert "--path" not in message


def test_wrapped_missing_module_is_the_one_to_install(site):
    # transformers' lazy imports raise an error of their own from the one that names the missing module.
    init = """\
        try:
            import gc_test_tokenizer_backend
        except ImportError as error:
            raise ModuleNotFoundError("Could not import module 'Tokenizer'") from error
    """
    install(site, "gc_test_lazylib", init)
    Path("model.py").write_text(MODEL.format(module="gc_test_lazylib"))
    message = scan_error("model.py")
    assert (
        "ModuleNotFoundError: Could not import module 'Tokenizer' (from ModuleNotFoundError: No module named" in message
    )
    assert "Install the package that provides `gc_test_tokenizer_backend`, which gc_test_lazylib needs" in message


def test_installed_package_reached_through_the_users_own_module(site):
    install(site, "gc_test_brokenlib", "import gc_test_missing_dependency\n")
    write(Path.cwd(), "gc_test_layers.py", "import gc_test_brokenlib\n")
    Path("model.py").write_text(MODEL.format(module="gc_test_layers"))
    message = scan_error("model.py")
    assert "model.py:2 imports `gc_test_layers`, which imports `gc_test_brokenlib`, which failed in" in message
    assert "pip install --upgrade gc_test_brokenlib." in message


def test_users_own_module_failing_inside_keeps_the_path_advice(site):
    write(Path.cwd(), "gc_test_helpers.py", "import gc_test_missing_sibling\n")
    Path("model.py").write_text(MODEL.format(module="gc_test_helpers"))
    message = scan_error("model.py")
    assert (
        "model.py:2 imports `gc_test_helpers`, whose import of `gc_test_missing_sibling` failed in gc_test_helpers, "
        "line 1: No module named 'gc_test_missing_sibling'. Install it, or add its folder with --path."
    ) in message


def test_users_own_missing_module_keeps_the_path_advice(site):
    Path("model.py").write_text(MODEL.format(module="gc_test_not_anywhere"))
    message = scan_error("model.py")
    assert (
        "model.py:2 imports `gc_test_not_anywhere`, which failed: No module named 'gc_test_not_anywhere'. "
        "Install it, or add its folder with --path."
    ) in message


def test_missing_name_in_an_installed_module_is_not_an_install_problem(site):
    Path("model.py").write_text("import torch\nfrom torch import gc_test_no_such_name\n")
    message = scan_error("model.py")
    assert "model.py:2: cannot import name 'gc_test_no_such_name' from 'torch'" in message
    assert "`torch` is installed: check the name, or upgrade it: pip install --upgrade torch." in message
    assert "--path" not in message


def test_module_target_whose_import_fails_inside_an_installed_package(site):
    install(site, "gc_test_brokenlib", "import gc_test_missing_dependency\n")
    write(Path.cwd(), "gc_test_proj/__init__.py", "")
    write(Path.cwd(), "gc_test_proj/models.py", "import gc_test_brokenlib\n\ndef build_model():\n    pass\n")
    with pytest.raises(GradcheckError) as caught:
        load_target("gc_test_proj.models:build_model")
    message = str(caught.value)
    assert message.startswith(
        "gc_test_proj.models imports `gc_test_brokenlib`, which failed in gc_test_brokenlib, line 1: "
        "ModuleNotFoundError: No module named 'gc_test_missing_dependency'."
    )
    assert "--path" not in message


def test_module_target_raising_import_error_itself_is_quoted(site):
    write(Path.cwd(), "gc_test_proj/__init__.py", "")
    write(Path.cwd(), "gc_test_proj/models.py", "raise ImportError('gc_test_proj needs a GPU build')\n")
    with pytest.raises(GradcheckError, match=r"^importing gc_test_proj.models raised ImportError: gc_test_proj needs"):
        load_target("gc_test_proj.models:build_model")


def test_users_module_named_like_an_installed_package_is_still_theirs(site):
    # The model's folder comes first on sys.path: its gc_test_shadow.py is imported, not the installed one.
    install(site, "gc_test_shadow", "")
    write(Path.cwd(), "gc_test_shadow.py", "import gc_test_missing_local\n")
    Path("model.py").write_text(MODEL.format(module="gc_test_shadow"))
    message = scan_error("model.py")
    assert "whose import of `gc_test_missing_local` failed in gc_test_shadow, line 1" in message
    assert message.endswith("Install it, or add its folder with --path.")
