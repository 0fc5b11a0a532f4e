"""Installs as a user makes them, in a fresh virtual environment: the README's editable install
(``editable_mode=strict``), which mypy and pyright must read like any installed package, and a regular wheel
built with ``python -m build``, from which ``recloss validate`` runs. Neither may make ``import backends``
possible.

The environment is new, but it reuses the frameworks installed here (a ``.pth`` file naming their folders, so
nothing is downloaded), and the build runs without isolation for the same reason (the user's command builds
in an isolated environment with setuptools from the index). The checkout is copied first: an editable
install writes its link tree into the project's ``build/`` folder. One environment serves every check.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 600

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="needs mypy (the test extra)")

USER_SCRIPT = """
    import numpy as np
    import recloss
    import recloss.backends
    import recloss.torch

    q = np.ones((4, 2), dtype=np.float32)
    value = float(recloss.sampled_softmax_loss(q, q, temperature=0.1, pos_ids=np.arange(4), reduction="sum"))
    wrong = recloss.sampled_softmax_loss(q, q, temprature=0.1)
    module = recloss.torch.SampledSoftmaxLoss(reduction="avg")
"""
EXPECTED_MYPY = {
    9: 'error: Unexpected keyword argument "temprature" for "sampled_softmax_loss"; did you mean "temperature"?',
    10: 'error: Argument "reduction" to "SampledSoftmaxLoss" has incompatible type "Literal[\'avg\']"',
}
EXPECTED_PYRIGHT = {9: 'No parameter named "temprature"',
                    10: 'Argument of type "Literal[\'avg\']" cannot be assigned to parameter "reduction"'}


def _folders_of_installed_packages() -> list[str]:
    """The folders holding the frameworks and tools the checks use, in this interpreter's order."""
    folders = []
    for module in ("numpy", "torch", "jax", "tensorflow", "keras", "mypy", "setuptools", "wheel", "build",
                   "triton", "ml_dtypes"):
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin:
            folder = str(Path(spec.origin).parents[1])
            if folder not in folders:
                folders.append(folder)
    return folders


def _run(command: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "MYPYPATH")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INDEX="1")
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, timeout=TIMEOUT)
    if check:
        assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> dict[str, Path]:
    """A fresh venv reusing the installed frameworks, and a copy of the checkout (its tracked and unignored
    files)."""
    base = tmp_path_factory.mktemp("install")
    source = base / "checkout"
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=base)
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=base)
    # Plain folder lines: Python adds them to sys.path without running the .pth files inside them, so an
    # editable recloss installed here (an import hook) does not leak into the new environment.
    Path(purelib.stdout.strip(), "zz_installed_packages.pth").write_text("\n".join(_folders_of_installed_packages()))
    user = base / "user"
    user.mkdir()
    (user / "user_script.py").write_text(textwrap.dedent(USER_SCRIPT))
    (user / "mypy.ini").write_text("[mypy]\nfollow_imports = silent\n\n[mypy-torch.*]\nfollow_imports = skip\n")
    return {"base": base, "source": source, "python": python, "bin": venv / "bin", "user": user}


def _mypy(fresh: dict[str, Path], cache: str) -> str:
    done = _run([str(fresh["python"]), "-m", "mypy", "--config-file", "mypy.ini", "--cache-dir",
                 str(fresh["base"] / cache), "--no-error-summary", "user_script.py"], cwd=fresh["user"], check=False)
    return done.stdout + done.stderr


def _assert_reports_exactly_the_mistakes(report: str, expected: dict[int, str], tool: str) -> None:
    assert "Cannot find implementation" not in report and "could not be resolved" not in report, report
    for line, message in expected.items():
        assert any(f"user_script.py:{line}" in row and message in row for row in report.splitlines()), \
            f"{tool} did not report line {line} ({message}):\n{report}"
    errors = [row for row in report.splitlines() if "error" in row and "user_script.py:" in row]
    assert len(errors) == len(expected), f"{tool}:\n{report}"


def _import_checks(fresh: dict[str, Path], location: str) -> None:
    done = _run([str(fresh["python"]), "-c", "import recloss, recloss.backends, recloss.backends.numpy; "
                 "print(recloss.__file__)"], cwd=fresh["user"])
    assert location in done.stdout, done.stdout
    top_level = _run([str(fresh["python"]), "-c", "import backends"], cwd=fresh["user"], check=False)
    assert "No module named 'backends'" in top_level.stderr, top_level.stderr


def test_editable_install_of_the_readme_is_read_by_type_checkers(fresh):
    _run([str(fresh["python"]), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e",
          str(fresh["source"]), "--config-settings", "editable_mode=strict"], cwd=fresh["base"])
    _import_checks(fresh, "__editable__.recloss")
    _assert_reports_exactly_the_mistakes(_mypy(fresh, "mypy-editable"), EXPECTED_MYPY, "mypy")

    pyright = shutil.which("basedpyright") or shutil.which("pyright")
    if pyright is None:
        pytest.skip("mypy checked; pyright not installed (basedpyright comes with the test extra)")
    done = _run([pyright, "--pythonpath", str(fresh["python"]), "user_script.py"], cwd=fresh["user"], check=False)
    _assert_reports_exactly_the_mistakes(done.stdout + done.stderr, EXPECTED_PYRIGHT, "pyright")


def test_wheel_installs_and_validates(fresh):
    dist = fresh["base"] / "dist"
    _run([str(fresh["python"]), "-m", "build", "--wheel", "--no-isolation", "--skip-dependency-check", "--outdir", str(dist),
          str(fresh["source"])], cwd=fresh["base"])
    wheel = next(dist.glob("recloss-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"recloss/py.typed", "recloss/__init__.pyi", "recloss/backends/__init__.py",
            "recloss/backends/torch/__init__.py"} <= set(names)
    assert not any(name.startswith("backends/") for name in names), "a top-level `backends` package"

    _run([str(fresh["python"]), "-m", "pip", "uninstall", "-y", "recloss"], cwd=fresh["base"], check=False)
    _run([str(fresh["python"]), "-m", "pip", "install", "--no-deps", str(wheel)], cwd=fresh["base"])
    _import_checks(fresh, "site-packages")
    done = _run([str(fresh["bin"] / "recloss"), "validate", "--backend", "torch", "--loss", "bpr_loss", "--dtype",
                 "float32"], cwd=fresh["user"])
    assert "bpr_loss | torch | cpu | float32" in done.stdout and "pass" in done.stdout, done.stdout
