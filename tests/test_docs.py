"""The README is a front page: short, every loss of the catalogue in its table on one line, every metric
named, and its links lead to files of the repository (the site's pages are checked by ``mkdocs build
--strict`` in ``test_site.py``)."""

from __future__ import annotations

import pathlib
import re

import pytest

from recloss import CATALOGUE
from recloss.losses import METRICS

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_is_a_front_page():
    assert len(README.splitlines()) <= 250
    for heading in ("## The two commands", "## Examples", "## The losses", "## Documentation"):
        assert heading in README, heading
    assert "editable_mode=strict" in README and "recloss validate" in README and "pytest -q" in README


def test_readme_table_lists_every_loss_once_and_nothing_else():
    rows = re.findall(r"^\| `(\w+)` \| (.+) \|$", README, flags=re.MULTILINE)
    names = [name for name, _ in rows]
    assert sorted(names) == sorted(CATALOGUE), set(names) ^ set(CATALOGUE)
    assert all(len(text) > 20 for _, text in rows)
    metrics_line = next(line for line in README.splitlines() if line.startswith("Metrics (`recloss.metrics`"))
    assert all(f"`{name}`" in metrics_line for name in METRICS)


def test_readme_links_lead_to_files():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if "://" not in link]
    assert len(local) >= 20
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, missing


def test_no_internal_targets_or_issue_numbers_in_user_documentation():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"\bissue \d+|\(issue \d+\)|targets? of issue|#\d{1,3}\b", text), page


GUIDES = "".join((ROOT / "docs" / "guide" / name).read_text(encoding="utf-8") for name in ("losses.md", "ranking.md"))
SIGNATURES = dict(re.findall(r"^\| `(\w+)\((.*?)\)` \|", GUIDES, flags=re.MULTILINE))


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_guide_tables_list_every_loss_with_its_defaults(name):
    """The tables of the losses guide (docs/guide/losses.md, ranking.md) show each loss with its options'
    defaults; the API reference is generated, these tables are written, hence the check."""
    spec = CATALOGUE[name]
    assert name in SIGNATURES, f"the guide's table has no row for {name}"
    shown = dict(part.split("=", 1) for part in map(str.strip, SIGNATURES[name].split(",")) if "=" in part)
    for option in spec.options:
        if option.name in ("reduction",):
            continue                      # stated once for every loss, above the table
        if option.name in shown:
            assert shown[option.name] == repr(option.default).replace("'", '"'), (name, option.name)
        else:
            assert option.name not in SIGNATURES[name], (name, option.name)
            pytest.fail(f"the guide's table row of {name} omits the option {option.name}={option.default!r}")
