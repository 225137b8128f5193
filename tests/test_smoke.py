"""Real processes: the installed entry point and `python -m`, and start-up without torch."""

import subprocess
import sys

from gradcheck_cli import __version__


def test_python_m_version():
    out = subprocess.run([sys.executable, "-m", "gradcheck_cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"gradcheck {__version__}"


def test_help_and_version_do_not_import_torch():
    probe = (
        "import sys\n"
        "from gradcheck_cli.cli.main import main\n"
        "for argv in (['gradcheck', '--help'], ['gradcheck', '--version'], ['gradcheck', 'demo', '--help']):\n"
        "    sys.argv = argv\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code in (0, None), exit.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported at start-up'\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_demo_runs_as_a_real_process():
    out = subprocess.run(
        [sys.executable, "-m", "gradcheck_cli", "demo", "--depth", "6", "--width", "16", "--format", "json"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
    )
    assert out.returncode in (0, 1), out.stderr
    assert out.stdout.lstrip().startswith("{")
    assert "Failed to initialize NumPy" not in out.stderr


def test_public_api_names_resolve_lazily():
    import gradcheck_cli

    for name in gradcheck_cli.__all__:
        assert getattr(gradcheck_cli, name) is not None, name
