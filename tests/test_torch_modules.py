"""``recloss.torch``: one ``nn.Module`` per loss of the catalogue, generated from its spec."""

from __future__ import annotations

import inspect
import io
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import recloss  # noqa: E402
import recloss.torch as rt  # noqa: E402
from recloss import _native  # noqa: E402
from recloss._spec import Option  # noqa: E402
from recloss.errors import OptionError  # noqa: E402
from recloss.losses import CATALOGUE  # noqa: E402
from recloss.parity import make_inputs  # noqa: E402

CASES = [(name, index) for name, spec in CATALOGUE.items() for index in range(len(spec.cases))]


def _tensors(spec, case, seed=0):
    inputs = make_inputs(spec, case, np.random.default_rng(seed))
    return {name: None if x is None else torch.tensor(x.astype(np.float32) if x.dtype == np.float64 else x)
            for name, x in inputs.items()}


def test_every_loss_has_a_module_with_the_spec_signature():
    for name, spec in CATALOGUE.items():
        cls = getattr(rt, _native.class_name(name))
        assert issubclass(cls, torch.nn.Module) and cls.spec is spec and cls.__module__ == "recloss.torch"
        init = inspect.signature(cls).parameters
        expected = [o.name for o in spec.options] + (["learn_temperature"] if _native.has_temperature(spec) else [])
        assert list(init) == expected
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in init.values())
        assert {o.name: init[o.name].default for o in spec.options} == {
            o.name: inspect.Parameter.empty if o.required else o.default for o in spec.options}
        forward = inspect.signature(cls.forward).parameters
        assert set(forward) == {"self", *spec.tensor_names}
        assert [p for p, v in forward.items() if v.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD] == \
            ["self", *[n for n in spec.positional if n in spec.tensor_names]]


@pytest.mark.parametrize("name, index", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_module_equals_the_function_on_every_case(name, index):
    spec = CATALOGUE[name]
    case = spec.cases[index]
    tensors = _tensors(spec, case)
    module = getattr(rt, _native.class_name(name))(**case.options)
    expected = getattr(recloss, name)(**tensors, **case.options)
    torch.testing.assert_close(module(**tensors), expected, rtol=0, atol=0)


def test_listmle_module_has_keras_rs_class_name_and_the_earlier_one_as_an_alias():
    assert rt.ListMLELoss.__name__ == "ListMLELoss" and rt.ListmleLoss is rt.ListMLELoss
    assert "ListMLELoss" in rt.__all__ and "ListmleLoss" not in rt.__all__


def test_reduction_and_sample_weight_as_in_torch_nn():
    q, p = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    w = torch.tensor([0.0, 1.0, 2.0, 0.5, 1.0, 3.0], dtype=torch.float64)
    rows = rt.SampledSoftmaxLoss(temperature=0.3, reduction="none")(q, p)
    logits = q @ p.T / 0.3  # in-batch softmax, written out
    torch.testing.assert_close(rows, torch.logsumexp(logits, 1) - torch.diagonal(logits))
    torch.testing.assert_close(rt.SampledSoftmaxLoss(temperature=0.3, reduction="none")(q, p, sample_weight=w),
                               rows * w)
    torch.testing.assert_close(rt.SampledSoftmaxLoss(temperature=0.3, reduction="sum")(q, p, sample_weight=w),
                               (rows * w).sum())
    torch.testing.assert_close(rt.SampledSoftmaxLoss(temperature=0.3)(q, p, sample_weight=w),
                               (rows * w).sum() / w.sum())


def test_repr_shows_the_options():
    assert repr(rt.SampledSoftmaxLoss(temperature=0.05, num_hard_negatives=10)) == (
        "SampledSoftmaxLoss(temperature=0.05, in_batch=None, num_hard_negatives=10, label_smoothing=0.0, "
        "z_loss=0.0, reduction='mean', implementation='auto', product_precision='input', gather=None, "
        "shard_negatives=None)")
    assert repr(rt.TripletMarginLoss(distance="cosine")) == \
        "TripletMarginLoss(margin=1.0, distance='cosine', reduction='mean')"
    assert repr(rt.InfoNCELoss(temperature=0.07, learn_temperature=True)).startswith(
        "InfoNCELoss(temperature=0.07 (learnt), symmetric=False, normalize=False")


def test_bad_options_fail_at_construction_with_the_function_words():
    with pytest.raises(OptionError) as from_module:
        rt.SampledSoftmaxLoss(temperature=-1.0)
    with pytest.raises(OptionError) as from_function:
        recloss.sampled_softmax_loss(np.ones((2, 2)), np.ones((2, 2)), temperature=-1.0)
    assert str(from_module.value) == str(from_function.value)
    with pytest.raises(OptionError, match="reduction"):
        rt.BPRLoss(reduction="avg")
    with pytest.raises(OptionError, match="learn_temperature"):
        rt.InfoNCELoss(learn_temperature="yes")
    with pytest.raises(TypeError):
        rt.SampledSoftmaxLoss(temprature=0.1)


def test_learnt_temperature_is_a_log_scale_parameter_with_the_right_gradient():
    module = rt.InfoNCELoss(temperature=0.2, learn_temperature=True).double()
    assert [name for name, _ in module.named_parameters()] == ["logit_scale"]
    scale = float(module.logit_scale.detach())  # log(1 / 0.2), rounded to float32 at construction
    assert math.isclose(scale, math.log(1 / 0.2), rel_tol=1e-7)
    q, k = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    loss = module(q, k)
    torch.testing.assert_close(loss, recloss.info_nce_loss(q, k, temperature=math.exp(-scale)))
    (grad,) = torch.autograd.grad(loss, [module.logit_scale])
    h = 1e-6
    shifted = [recloss.info_nce_loss(q, k, temperature=math.exp(-(scale + s))) for s in (h, -h)]
    torch.testing.assert_close(grad, (shifted[0] - shifted[1]) / (2 * h), rtol=1e-6, atol=1e-9)


def test_learnt_temperature_trains_and_round_trips_through_state_dict():
    torch.manual_seed(0)
    q, p = torch.randn(16, 8), torch.randn(16, 8)
    module = rt.SampledSoftmaxLoss(temperature=1.0, learn_temperature=True)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.5)
    first = module(q, p)
    for _ in range(3):
        optimizer.zero_grad()
        module(q, p).backward()
        optimizer.step()
    assert module(q, p) < first and float(module.temperature.detach()) != 1.0
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    restored = rt.SampledSoftmaxLoss(temperature=1.0, learn_temperature=True)
    restored.load_state_dict(torch.load(buffer))
    torch.testing.assert_close(restored(q, p), module(q, p))
    assert rt.SampledSoftmaxLoss(temperature=0.1).state_dict() == {}


def test_torch_compile_of_a_module_with_a_learnt_temperature():
    torch._dynamo.reset()
    module = rt.SampledSoftmaxLoss(temperature=0.1, learn_temperature=True, num_hard_negatives=3)
    compiled = torch.compile(module, fullgraph=True, dynamic=False, backend="aot_eager")
    q, p = torch.randn(8, 4, requires_grad=True), torch.randn(8, 4)
    ids = torch.tensor([0, 1, 2, 2, 3, 4, 5, 5])
    out = compiled(q, p, pos_ids=ids)
    eager = module(q, p, pos_ids=ids)
    torch.testing.assert_close(out, eager)
    got = torch.autograd.grad(out, [q, module.logit_scale])
    want = torch.autograd.grad(eager, [q, module.logit_scale])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_a_new_option_reaches_the_constructor_and_the_function():
    """How ``gather`` (issue 8) will pass: one more option in the spec, nothing else to change."""
    spec = CATALOGUE["bpr_loss"]
    extended = type(spec)(**{**spec.__dict__, "options": (*spec.options, Option("gather", False, "bool",
                                                                                annotation="bool"))})
    seen = {}

    def function(pos_logit, neg_logit, *, sample_weight=None, reduction="mean", gather=False):
        seen.update(gather=gather, reduction=reduction)
        return recloss.bpr_loss(pos_logit, neg_logit, sample_weight=sample_weight, reduction=reduction)

    module = rt.module_class(extended, function)(gather=True, reduction="sum")
    module(torch.zeros(3), torch.zeros(3))
    assert seen == {"gather": True, "reduction": "sum"}
    assert "gather=True" in repr(module)
