"""Framework backends, installed as ``recloss.backends`` (the folder ``backends/`` of the repository).

Each module imports its framework and exposes the same names:

``KERNELS``
    loss name -> ``kernel(bound, **arguments)``: the math of :mod:`recloss.kernels` bound to the module's
    ``OPS`` (native operations of the framework), plus any kernel the backend specialises.
``convert(array)``
    a NumPy array -> a tensor of the framework (same dtype where the framework has it).
``concrete(x)``
    the values of ``x`` as a NumPy array when they are known without tracing, else None (value checks).
``tracing()``
    True while the framework traces with symbolic sizes (torch.compile): validation is then not cached.
``devices()``
    the devices this framework sees, e.g. ``["cpu", "cuda"]``.
``value_and_grad(fn, inputs, wrt, device)``
    run ``fn(**tensors)`` on ``device`` from NumPy ``inputs`` and return the value and the gradients with
    respect to the names in ``wrt``, all as float64 NumPy arrays (used by :mod:`recloss.parity`).

Importing this package imports no framework.
"""
