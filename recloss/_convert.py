"""NumPy inputs of a call on a framework backend, converted to that framework's tensors.

The rules, the same on every backend:

* **Precision follows the framework tensors.** NumPy floating arrays passed beside floating tensors of the
  framework take the compute dtype of those tensors (float64 if one of them is float64, else float32), so a
  ``log_q`` computed in NumPy float64 does not turn a float32 model's loss (and its ``[B, N]`` block) into
  float64. Alone (every floating input NumPy, ``backend=`` given), NumPy arrays keep their dtype.
* **Ids are compared by value.** Integer id arrays are handed to the backend's ``convert_ids`` where it has
  one (JAX without ``jax_enable_x64`` cannot hold 64-bit integers: see ``recloss.backends.jax.convert_ids``).
* **Arrays of other kinds** (strings, objects, complex numbers) are not converted: the shared validator then
  names their NumPy dtype in its error, on every backend alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recloss._dispatch import framework_of
from recloss._spec import FLOAT, INT, LossSpec, kind_of_dtype
from recloss._validate import dtype_name

_CONVERTIBLE = (FLOAT, INT, "bool")


def convert_numpy(spec: LossSpec, module: Any, tensors: dict[str, Any]) -> dict[str, Any]:
    """``tensors`` with every NumPy array converted to ``module``'s framework by the rules above."""
    numpy_names = [name for name, x in tensors.items() if x is not None and framework_of(x) == "numpy"]
    if not numpy_names:
        return tensors
    out = dict(tensors)
    compute = _framework_float_dtype(spec, tensors)
    ids: dict[str, np.ndarray] = {}
    for name in numpy_names:
        x = tensors[name]
        kind = kind_of_dtype(dtype_name(x.dtype))
        if kind not in _CONVERTIBLE:
            continue
        if kind == INT and spec.arg(name).kind == INT:
            ids[name] = x
            continue
        if kind == FLOAT and compute is not None and dtype_name(x.dtype) != compute:
            x = x.astype(compute)
        out[name] = module.convert(x)
    if ids:
        convert_ids = getattr(module, "convert_ids", None)
        framework_ids = [name for arg in spec.args if arg.kind == INT
                         for name in [arg.name] if name not in ids and tensors.get(name) is not None]
        if convert_ids is not None:
            out.update(convert_ids(spec.name, ids, framework_ids))
        else:
            out.update({name: module.convert(x) for name, x in ids.items()})
    return out


def _framework_float_dtype(spec: LossSpec, tensors: dict[str, Any]) -> str | None:
    """The compute dtype of the call's floating framework tensors, or None if it has none."""
    names = [dtype_name(x.dtype) for arg in spec.args if arg.kind == FLOAT
             for x in [tensors.get(arg.name)] if x is not None and framework_of(x) != "numpy"]
    names = [n for n in names if kind_of_dtype(n) == FLOAT]
    if not names:
        return None
    return "float64" if "float64" in names else "float32"
