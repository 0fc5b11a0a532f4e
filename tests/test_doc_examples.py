"""The README's and the documentation's code runs (see ``doc_blocks.py`` for the markers): the Python blocks
in one subprocess per group of pages (per framework, or per page where a page needs an optional peer), the
shell blocks marked ``run`` one by one; every skipped block says why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import doc_blocks

ROOT = Path(__file__).resolve().parents[1]
GROUPS = doc_blocks.python_groups()
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1", "KERAS_BACKEND": "tensorflow"}


def test_every_block_is_runnable_or_says_why_not():
    """Shell blocks run only when marked; any other one must carry a skip reason (the parser refuses an empty
    one), and every page's markers parse."""
    unmarked = [f"{b.page}:{b.line}" for path in doc_blocks.pages() for b in doc_blocks.extract(path)
                if b.language in doc_blocks.SHELL and not b.run and b.skip is None]
    assert not unmarked, f"shell blocks neither marked `docs-test: run` nor skipped with a reason: {unmarked}"
    assert sum(len(pages) for pages in GROUPS.values()) >= 10


def test_markers_are_read(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text("text\n\n<!-- docs-test: skip (needs a GPU) -->\n```python\nimport torch\n```\n\n"
                    "<!-- docs-test: setup\nx = 1\n-->\n<!-- docs-test: requires rax -->\n\n```python\nprint(x)\n```\n"
                    "\n```bash\nls\n```\n\n- item\n\n  ```python\n  y = 2\n  ```\n")
    monkeypatch.setattr(doc_blocks, "ROOT", tmp_path)
    first, second, shell, indented = doc_blocks.extract(page)
    assert (first.skip, first.line, first.code) == ("needs a GPU", 4, "import torch\n")
    assert (second.setup, second.requires, second.skip) == ("x = 1\n", ["rax"], None)
    assert shell.language == "bash" and not shell.run and shell.skip is None
    assert indented.code == "y = 2\n" and indented.skip is None and indented.setup == ""
    page.write_text("<!-- docs-test: skip -->\n```python\npass\n```\n")
    with pytest.raises(ValueError, match="needs a reason"):
        doc_blocks.extract(page)
    assert doc_blocks.frameworks_of("import os\nimport numpy as np, tensorflow as tf, tensorflow_recommenders as t\n"
                                    "from jax import numpy\nimport recloss.torch") == {"tensorflow", "tf-keras",
                                                                                         "jax", "torch"}
    results = doc_blocks.run_pages([[{"page": "p", "line": 1, "requires": [], "setup": "", "code": "1 / 0"},
                                     {"page": "p", "line": 5, "requires": [], "setup": "", "code": "pass"}]])
    assert [r["status"] for r in results] == ["failed", "skipped"] and "ZeroDivisionError" in results[0]["detail"]


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_python_blocks_run(group, tmp_path):
    jobs = tmp_path / "pages.json"
    jobs.write_text(doc_blocks.to_json(GROUPS[group]))
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "doc_blocks.py"), str(jobs)], cwd=tmp_path,
                          capture_output=True, text=True, env=ENV, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    failed = [f"{r['where']}\n{r['detail']}" for r in results if r["status"] == "failed"]
    assert not failed, "\n\n".join(failed)
    ran = [r for r in results if r["status"] == "passed"]
    assert ran, results


@pytest.mark.parametrize("module", doc_blocks.required_modules())
def test_the_peers_of_the_documentation_are_installed(module):
    """The blocks marked ``requires`` (the migration pages' equalities) run where their peer is installed and
    are skipped elsewhere; this test makes such a skip visible. CI installs every peer."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed: the documentation blocks that compare with it did not run")


SHELL_BLOCKS = [b for path in doc_blocks.pages() for b in doc_blocks.extract(path)
                if b.language in doc_blocks.SHELL and b.run]


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=[f"{b.page}:{b.line}" for b in SHELL_BLOCKS])
def test_shell_blocks_marked_run_succeed(block):
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=ROOT, capture_output=True,
                          text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
