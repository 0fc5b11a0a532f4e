"""MkDocs hook: the API reference, generated from recloss' catalogue and public modules at every build.

No page of the reference is written by hand. Each page is a list of mkdocstrings directives (``::: name``)
made from what the package exposes:

* ``api/losses.md``: every loss of ``recloss.CATALOGUE``, grouped by family (the module of
  ``recloss.losses`` that declares it), after a summary table (inputs and their shapes, options, defaults);
* ``api/metrics.md``: ``recloss.metrics.METRICS``;
* ``api/torch.md`` and ``api/keras.md``: the native classes (``__all__`` of ``recloss.torch``/``recloss.keras``);
* ``api/validation.md`` and ``api/errors.md``: the rest of ``recloss.__all__``;
* one page per other public module of the package (``recloss/<name>.py`` or a package, without a leading
  underscore, that is not internal), with its ``__all__``: a new module such as ``recloss.sampling`` appears
  without a page being written.

The hook also fails a strict build (``mkdocs build --strict``) through warnings when a public name is on no
page, when a documented object has no docstring, or when a loss's docstring omits one of its parameters.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import pkgutil
import re
from dataclasses import dataclass, field

from mkdocs.structure.files import File, Files

LOG = logging.getLogger("mkdocs.hooks.api_reference")   # under "mkdocs": its warnings count for --strict

#: Modules documented on their own pages below, or internal (no page): everything else public gets a page.
OWN_PAGES = {"metrics", "torch", "keras", "errors"}
INTERNAL = {"losses", "reference", "kernels", "backends", "parity", "parity_distributed", "parity_sampling", "cli"}


@dataclass
class Page:
    """One generated page: its path under ``docs/``, title, introduction and the objects it documents."""

    path: str
    title: str
    intro: str = ""
    sections: list[tuple[str, str, list[str]]] = field(default_factory=list)   # (heading, text, object paths)

    @property
    def objects(self) -> list[str]:
        return [name for _, _, names in self.sections for name in names]

    def markdown(self) -> str:
        lines = [f"# {self.title}", "", self.intro, ""]
        for heading, text, names in self.sections:
            if heading:
                lines += [f"## {heading}", ""]
            if text:
                lines += [text, ""]
            for name in names:
                lines += [f"::: {name}", ""]
        return "\n".join(lines)


def _first_line(obj: object) -> str:
    return (inspect.getdoc(obj) or "").strip().splitlines()[0] if inspect.getdoc(obj) else ""


def _family_of(spec: object) -> str:
    """The module of ``recloss.losses`` that declares ``spec`` (``softmax``, ``pairwise``, ``ranking``)."""
    import recloss.losses as losses

    for info in pkgutil.iter_modules(losses.__path__):
        module = importlib.import_module(f"recloss.losses.{info.name}")
        if any(value is spec for value in vars(module).values()) or any(
                spec in value for value in vars(module).values() if isinstance(value, (list, tuple))):
            return info.name
    return "other"


FAMILY_TITLES = {"softmax": "Softmax and retrieval losses", "pairwise": "Pairwise and pointwise losses over "
                 "logits and embeddings", "ranking": "Ranking losses over lists", "other": "Other losses"}


def _loss_table(specs: list[object], prefix: str) -> str:
    """A summary table of specs: name (linked to its entry), what it is, its tensors with shapes, its options."""
    rows = ["| function | what it computes | tensors | options (defaults) |", "|---|---|---|---|"]
    for spec in specs:
        tensors = ", ".join(f"`{a.name}` `{a.shape_text}`" + ("" if a.required else " (optional)")
                            for a in spec.args)
        options = ", ".join(f"`{o.name}={o.default!r}`" for o in spec.options)
        rows.append(f"| [`{spec.name}`][{prefix}{spec.name}] | {spec.summary} | {tensors} | {options} |")
    return "\n".join(rows)


def _public_modules() -> list[str]:
    """Public modules of the package that get a page of their own (not internal, not on a fixed page)."""
    import recloss

    names = []
    for info in pkgutil.iter_modules(recloss.__path__):
        if not info.name.startswith("_") and info.name not in OWN_PAGES | INTERNAL:
            names.append(info.name)
    return sorted(names)


def build_pages() -> list[Page]:
    """Every page of the API reference, from what recloss exposes now."""
    import recloss
    import recloss.keras
    import recloss.metrics
    import recloss.torch
    from recloss.losses import CATALOGUE, METRICS

    losses = Page("api/losses.md", "Losses", "Every loss of the catalogue, generated from its declaration: the "
                  "signature, the shapes of its tensors (named dimensions: B rows, D embedding size, K negatives "
                  "per row, N shared negatives, L items per list, M a free length), the defaults, the math, "
                  "the errors and the references. Each takes tensors of one framework and returns a tensor of "
                  "that framework; see [Choosing a backend](../guide/backends.md).")
    families: dict[str, list[object]] = {family: [] for family in FAMILY_TITLES}
    for spec in CATALOGUE.values():
        families.setdefault(_family_of(spec), []).append(spec)
    families = {family: specs for family, specs in families.items() if specs}
    for family, specs in families.items():
        losses.sections.append((FAMILY_TITLES.get(family, family.capitalize()), _loss_table(specs, "recloss."),
                                [f"recloss.{spec.name}" for spec in specs]))

    metrics = Page("api/metrics.md", "Metrics", "The retrieval and ranking metrics of `recloss.metrics`, on "
                   "every backend (values only: no gradient flows through them).")
    metrics.sections.append(("", _loss_table(list(METRICS.values()), "recloss.metrics."),
                             [f"recloss.metrics.{name}" for name in METRICS]))

    torch_page = Page("api/torch.md", "PyTorch modules", "`recloss.torch`: one `torch.nn.Module` per loss, "
                      "generated from the catalogue (options to the constructor, tensors to `forward`).")
    torch_page.sections.append(("", inspect.getdoc(recloss.torch) or "",
                                [f"recloss.torch.{name}" for name in recloss.torch.__all__]))

    keras_page = Page("api/keras.md", "Keras 3 layers and losses", "`recloss.keras`: the retrieval task layer "
                      "and a `keras.losses.Loss` per loss with a `(y_true, y_pred)` form, generated from the "
                      "catalogue; on every Keras backend.")
    keras_page.sections.append(("", inspect.getdoc(recloss.keras) or "",
                                [f"recloss.keras.{name}" for name in recloss.keras.__all__]))

    errors_page = Page("api/errors.md", "Errors", "Every input error is raised by the shared validator with the "
                       "same class and words on every backend; see [Errors and validation]"
                       "(../guide/validation.md).")
    errors = [name for name in recloss.__all__ if isinstance(getattr(recloss, name), type)
              and issubclass(getattr(recloss, name), Exception)]
    errors_page.sections.append(("", "", [f"recloss.{name}" for name in errors]))

    validation = Page("api/validation.md", "Validation and backends", "Cross-framework validation as a Python "
                      "API (the `recloss validate` command runs the same engine) and the installed backends.")
    covered = set(CATALOGUE) | set(errors) | {"metrics", "CATALOGUE"}
    # Public modules re-exported by name (``recloss.sampling``) have their own page.
    rest = [name for name in recloss.__all__ if name not in covered and not inspect.ismodule(getattr(recloss, name))]
    validation.sections.append(("", "", [f"recloss.{name}" for name in rest]))
    pages = [losses, metrics, torch_page, keras_page, validation, errors_page]

    for name in _public_modules():
        module = importlib.import_module(f"recloss.{name}")
        public = list(getattr(module, "__all__", []))
        if not public:
            LOG.warning("recloss.%s is a public module without __all__: list its public names there so that "
                        "the API reference can document them", name)
        page = Page(f"api/{name}.md", f"recloss.{name}", _first_line(module))
        page.sections.append(("", "", [f"recloss.{name}.{member}" for member in public]))
        pages.append(page)
    return pages


def check(pages: list[Page]) -> None:
    """Warn (a failure under ``--strict``) about public names on no page, objects without a docstring and
    loss parameters missing from their docstrings."""
    import recloss

    documented = {path for page in pages for path in page.objects}
    for name in recloss.__all__:
        if inspect.ismodule(getattr(recloss, name)):
            if name != "metrics" and not any(path.startswith(f"recloss.{name}.") for path in documented):
                LOG.warning("recloss.%s is a public module (in recloss.__all__) without an API page", name)
        elif name != "CATALOGUE" and f"recloss.{name}" not in documented:
            LOG.warning("recloss.%s is public (in recloss.__all__) but on no API page", name)
    for path in sorted(documented):
        module_name, _, attribute = path.rpartition(".")
        obj = getattr(importlib.import_module(module_name), attribute)
        doc = inspect.getdoc(obj)
        if not doc:
            LOG.warning("%s has no docstring: the API reference would show nothing for it", path)
            continue
        if callable(obj) and hasattr(obj, "spec"):
            described = {line.strip().split(":")[0].lstrip("*") for line in doc.splitlines()
                         if line.startswith("    ") and not line.startswith("     ") and ":" in line}
            missing = [p for p in inspect.signature(obj).parameters if p not in described]
            if missing:
                LOG.warning("%s: its docstring does not describe the parameters %s", path, missing)


_PAGES: list[Page] = []


def on_config(config):
    """Generate the pages and put them in the navigation, in place of the entry named ``API reference``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _PAGES[:] = build_pages()
    check(_PAGES)
    entries = [{"Overview": "api/index.md"}] + [{page.title: page.path} for page in _PAGES]
    for item in config["nav"] or []:
        if isinstance(item, dict) and "API reference" in item:
            item["API reference"] = entries
    return config


def on_files(files: Files, config) -> Files:
    for page in _PAGES:
        files.append(File.generated(config, page.path, content=page.markdown()))
    files.append(File.generated(config, "api/index.md", content=_index(_PAGES)))
    return files


#: Sphinx roles in docstrings (``:func:`name```, read well by ``help``), as the rendered page shows them.
_ROLE = re.compile(r":(?:func|class|data|mod|meth|attr|obj):(<code>)")


def on_page_content(html: str, page, config, files) -> str:
    """Drop the Sphinx role prefixes that docstrings keep for ``help()``: ``:class:`Report``` shows as code."""
    return _ROLE.sub(r"\1", html)


def _index(pages: list[Page]) -> str:
    lines = ["# API reference", "", "Generated from the package at every build: a loss added to the catalogue, "
             "or a public module added to the package, appears here without a page being written.", "",
             "| page | what it documents |", "|---|---|"]
    for page in pages:
        lines.append(f"| [{page.title}]({page.path.removeprefix('api/')}) | "
                     + ", ".join(f"`{path.rsplit('.', 1)[1]}`" for path in page.objects) + " |")
    return "\n".join(lines) + "\n"
