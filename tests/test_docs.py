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
        if option.name in shown:
            assert shown[option.name] == repr(option.default).replace("'", '"'), (name, option.name)
        else:
            assert option.name not in SIGNATURES[name], (name, option.name)
            pytest.fail(f"README's table row of {name} omits the option {option.name}={option.default!r}")


def test_readme_states_the_validation_tolerances_of_the_code():
    """The base tolerances the README gives are ``recloss.parity.TOLERANCES`` (the JSON report's header), and the
    command's note on the rows whose tolerance is derived from half-precision products names the same base."""
    from recloss.cli import _derived_tolerances_note
    from recloss.parity import TOLERANCES, Report, Row

    stated = re.search(r"Tolerances \(value, gradient\):\s*(.+?);", README, flags=re.DOTALL).group(1)
    pairs = dict(re.findall(r"(\w+) \(([^)]+)\)", stated))
    assert {name: tuple(float(x) for x in pair.split(",")) for name, pair in pairs.items()} == TOLERANCES
    base = Row("bpr_loss", "jax", "cpu", "bfloat16", value_tolerance=1e-5, grad_tolerance=1e-2, grad_error=0.0)
    derived = Row("sampled_softmax_loss", "torch", "cpu", "bfloat16", value_tolerance=0.024, grad_tolerance=0.26,
                  grad_error=0.0)
    assert _derived_tolerances_note(Report([base])) == ""
    assert "the dtype's base (bfloat16 1e-05, 0.01)" in _derived_tolerances_note(Report([base, derived]))
