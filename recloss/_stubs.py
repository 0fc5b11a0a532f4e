"""Type stubs generated from the catalogue, so that editors and type checkers see the real signatures of the
functions and classes that :mod:`recloss._api`, :mod:`recloss.torch` and :mod:`recloss.keras` generate at
import time (a misspelt option or a wrong type is then reported before the code runs).

``python -m recloss._stubs`` rewrites ``recloss/__init__.pyi``, ``recloss/torch.pyi`` and ``recloss/keras.pyi``;
``python -m recloss._stubs --check`` only reports which differ (``tests/test_typing.py`` runs the check). Run it
after adding a loss or an option. No framework is imported.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from recloss import _native, _sampling_native
from recloss._api import _docstring as function_docstring
from recloss._native import Param
from recloss._spec import LossSpec
from recloss.losses import CATALOGUE

PACKAGE = Path(__file__).resolve().parent
HEADER = "# Generated from the catalogue by `python -m recloss._stubs`; do not edit.\n"


def _doc(text: str, indent: str) -> str:
    body = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    lines = body.splitlines()
    return (f'{indent}"""' + ("\n".join([lines[0]] + [(indent + line) if line else "" for line in lines[1:]]))
            + f'\n{indent}"""\n')


def _def(name: str, params: list[Param], returns: str, doc: str | None, indent: str = "",
         first: str = "") -> str:
    signature = _native.signature_text(params, annotated=True, first=first)
    head = f"{indent}def {name}({signature}) -> {returns}:"
    if len(head) > 110:  # one parameter a line
        parts = _native.signature_text(params, annotated=True, first=first, separator="\n").splitlines()
        head = (f"{indent}def {name}(\n" + "".join(f"{indent}    {part},\n" for part in parts)
                + f"{indent}) -> {returns}:")
    if doc is None:
        return head + " ...\n"
    return head + "\n" + _doc(doc, indent + "    ")


def _all(names: list[str]) -> str:
    return "__all__ = [\n" + "".join(f"    {name!r},\n" for name in names) + "]\n"


# ----------------------------------------------------------------------------------------------------------
# recloss/__init__.pyi: the public functions, and what __init__.py re-exports


def function_params(spec: LossSpec) -> list[Param]:
    """The public function's parameters, in :func:`recloss._api.build`'s order."""
    params = []
    for position, name in enumerate((*spec.positional, *spec.keyword_order)):
        keyword_only = position >= len(spec.positional)
        if name in spec.tensor_names:
            arg = spec.arg(name)
            params.append(Param(name, "ArrayLike" if arg.required else "ArrayLike | None",
                                _native._REQUIRED if arg.required else None, keyword_only=keyword_only))
        else:
            option = spec.option(name)
            params.append(Param(name, _native.option_annotation(option), option.default, keyword_only=keyword_only))
    return params + [Param("backend", "str | None", None)]


def render_init() -> str:
    """The stub of ``recloss/__init__.py``, following its statements: its re-exports as ``import ... as``,
    each generated loss function with its signature and docstring."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    exported = _exported_names(tree)
    doc = ast.get_docstring(tree)
    imports, functions, seen = [], [], set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                name = alias.asname or alias.name
                if name in exported:
                    imports.append(f"from {node.module} import {alias.name} as {name}\n")
                    seen.add(name)
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in CATALOGUE:
                spec = CATALOGUE[name]
                functions.append(_def(name, function_params(spec), "Tensor", function_docstring(spec)))
                seen.add(name)
            elif name == "__version__":
                seen.add(name)
    missing = [name for name in exported if name not in seen]
    if missing:
        raise RuntimeError(f"recloss/__init__.py exports {missing}, which the stub generator cannot describe")
    return (HEADER + (_doc(doc, "") if doc else "") + "\nfrom typing import Literal\n\n"
            + "from recloss._typing import ArrayLike, Tensor, TensorLike\n" + "".join(imports)
            + "\n__version__: str\n\n" + "\n\n".join(functions) + "\n\n" + _all(exported))


def _exported_names(tree: ast.Module) -> list[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise RuntimeError("recloss/__init__.py has no __all__")


# ----------------------------------------------------------------------------------------------------------
# recloss/torch.pyi


def render_torch() -> str:
    classes = []
    for spec in CATALOGUE.values():
        name = _native.class_name(spec.name)
        forward = _native.torch_forward_params(spec)
        classes.append(
            f"class {name}(LossModule):\n" + _doc(f"The ``torch.nn.Module`` form of :func:`recloss.{spec.name}`: "
                                                  f"{spec.summary}", "    ")
            + _def("__init__", _native.torch_init_params(spec), "None", None, "    ", first="self")
            + _def("forward", forward, "torch.Tensor", None, "    ", first="self")
            + _def("__call__", forward, "torch.Tensor", None, "    ", first="self"))
    sampling = _sampling_native.torch_classes()
    classes += [_sampling_class(name, "torch.nn.Module", *parts) for name, parts in sampling.items()]
    names = ["LossModule", *sorted(_native.class_name(s.name) for s in CATALOGUE.values()), *sampling]
    return (HEADER + "\nfrom typing import Any, Callable, ClassVar, Literal\n\nimport torch\n\n"
            "from recloss._spec import LossSpec\nfrom recloss._typing import TensorLike\n"
            + _sampling_native.STUB_IMPORT + "\n\n"
            "class LossModule(torch.nn.Module):\n"
            "    spec: ClassVar[LossSpec]\n"
            "    function: ClassVar[Callable[..., Any]]\n"
            "    options: dict[str, Any]\n"
            "    learn_temperature: bool\n"
            "    logit_scale: torch.nn.Parameter\n"
            "    @property\n"
            "    def temperature(self) -> Any: ...\n"
            "    def extra_repr(self) -> str: ...\n\n\n"
            "def module_class(spec: LossSpec, function: Callable[..., Any]) -> type[LossModule]: ...\n\n\n"
            + "\n\n".join(classes) + "\n\n" + _all(names))


# ----------------------------------------------------------------------------------------------------------
# recloss/keras.pyi


def render_keras() -> str:
    retrieval = CATALOGUE[_native.RETRIEVAL_SPEC]
    call = _native.retrieval_call_params(retrieval)
    classes = []
    for spec in CATALOGUE.values():
        if _native.keras_form(spec) is None:
            continue
        name = _native.class_name(spec.name)
        classes.append(f"class {name}(ReclossLoss):\n"
                       + _doc(f"The ``keras.losses.Loss`` form of :func:`recloss.{spec.name}`: {spec.summary}", "    ")
                       + _def("__init__", _native.keras_loss_init_params(spec), "None", None, "    ", first="self"))
    sampling = _sampling_native.keras_classes()
    classes += [_sampling_class(name, "keras.layers.Layer", *parts) for name, parts in sampling.items()]
    names = ["Retrieval", "ReclossLoss", "loss_class",
             *sorted(_native.class_name(s.name) for s in CATALOGUE.values() if _native.keras_form(s)), *sampling]
    return (HEADER + "\nfrom typing import Any, Callable, ClassVar, Literal\n\n"
            "import keras  # type: ignore[import-untyped]\n\n"
            "from recloss._spec import LossSpec\n" + _sampling_native.STUB_IMPORT + "\n\n"
            "class Retrieval(keras.layers.Layer):\n"
            + _doc("Retrieval task layer on :func:`recloss.sampled_softmax_loss`.", "    ")
            + "    spec: ClassVar[LossSpec]\n"
            "    options: dict[str, Any]\n"
            + _def("__init__", _native.retrieval_init_params(retrieval), "None", None, "    ", first="self")
            + _def("call", call, "Any", None, "    ", first="self")
            + _def("__call__", call, "Any", None, "    ", first="self")
            + "    def compute_output_spec(self, query_emb: Any, *args: Any, **kwargs: Any) -> Any: ...\n"
            "    def get_config(self) -> dict[str, Any]: ...\n\n\n"
            "class ReclossLoss(keras.losses.Loss):\n"
            "    spec: ClassVar[LossSpec]\n"
            "    function: ClassVar[Callable[..., Any]]\n"
            "    form: ClassVar[str]\n"
            "    options: dict[str, Any]\n"
            "    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any: ...\n"
            "    def call(self, y_true: Any, y_pred: Any) -> Any: ...\n"
            "    def get_config(self) -> dict[str, Any]: ...\n\n\n"
            "def loss_class(spec: LossSpec, function: Callable[..., Any]) -> type[ReclossLoss]: ...\n\n\n"
            + "\n\n".join(classes) + "\n\n" + _all(names))


def _sampling_class(name: str, base: str, doc: str, attributes: list[str],
                    methods: list[_sampling_native.Method]) -> str:
    """The stub of an estimator or queue class (described in :mod:`recloss._sampling_native`)."""
    lines = "".join("    " + line.replace("\n", "\n    ") + "\n" for line in attributes)
    return (f"class {name}({base}):\n" + _doc(doc, "    ") + lines
            + "".join(_def(m.name, m.params, m.returns, None, "    ", first="self") for m in methods))


def render() -> dict[Path, str]:
    """Every stub file and its text."""
    return {PACKAGE / "__init__.pyi": render_init(), PACKAGE / "torch.pyi": render_torch(),
            PACKAGE / "keras.pyi": render_keras()}


def stale() -> list[Path]:
    """The stub files whose text differs from what the catalogue gives."""
    return [path for path, text in render().items() if not path.exists() or path.read_text() != text]


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        paths = stale()
        for path in paths:
            print(f"stale: {path} (run `python -m recloss._stubs`)")
        return 1 if paths else 0
    if argv:
        print("usage: python -m recloss._stubs [--check]", file=sys.stderr)
        return 2
    for path, text in render().items():
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
