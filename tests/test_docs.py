"""The README's catalogue table agrees with the catalogue: every loss is listed with its options' defaults."""

from __future__ import annotations

import pathlib
import re

import pytest

from recloss import CATALOGUE

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
SIGNATURES = dict(re.findall(r"^\| `(\w+)\((.*?)\)` \|", README, flags=re.MULTILINE))


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_readme_table_lists_every_loss_with_its_defaults(name):
    spec = CATALOGUE[name]
    assert name in SIGNATURES, f"README's table has no row for {name}"
    shown = dict(part.split("=", 1) for part in map(str.strip, SIGNATURES[name].split(",")) if "=" in part)
    for option in spec.options:
        if option.name in ("reduction",):
            continue                      # stated once for every loss, above the table
        if option.required:               # a keyword-only parameter without a default: shown by its name alone
            assert re.search(rf"\*, (.*, )?{option.name}(,|$)", SIGNATURES[name]), (name, option.name)
            continue
        if option.name in shown:
            assert shown[option.name] == repr(option.default).replace("'", '"'), (name, option.name)
        else:
            assert option.name not in SIGNATURES[name], (name, option.name)
            pytest.fail(f"README's table row of {name} omits the option {option.name}={option.default!r}")
