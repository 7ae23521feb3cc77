"""How downstream training computes (repro.compute): precision and compile, checked against eager float32."""

import pytest
import torch
from torch import nn

from repro.experiments.spec import RunSpec
from repro import compute
from repro.experiments import approaches, segmentation, transfer
from repro.models import build_classifier, channels_last
from repro.profiles import get_profile

P = get_profile("smoke")
CE = nn.functional.cross_entropy


def batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (channels_last(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)),
            torch.randint(0, 10, (n,), generator=g))


def model(seed=0):
    torch.manual_seed(seed)
    return build_classifier(P.model, 10, width=P.width).to(memory_format=torch.channels_last).train()


def grads(net, loss, x, y):
    net.zero_grad()
    value = loss(net, x, y)
    value.backward()
    return value, torch.cat([p.grad.reshape(-1) for p in net.parameters()])


def test_fp32_is_the_plain_loss_bit_for_bit():
    x, y = batch()
    a, b = model(), model()
    (la, ga), (lb, gb) = grads(a, compute.training_loss(CE), x, y), grads(b, lambda m, x, y: CE(m(x), y), x, y)
    assert torch.equal(la, lb) and torch.equal(ga, gb)


def test_bf16_keeps_the_loss_and_the_gradients_in_fp32_within_its_rounding():
    x, y = batch()
    net = model()
    l32, g32 = grads(net, compute.training_loss(CE), x, y)
    l16, g16 = grads(net, compute.training_loss(CE, "bf16"), x, y)
    assert l16.dtype == torch.float32 and all(p.grad.dtype == torch.float32 for p in net.parameters())
    assert not torch.equal(l16, l32)                                   # it does compute in bf16 ...
    assert abs(l16 - l32) < 0.02 * abs(l32)                            # ... within its rounding (8 bits: 0.4 %)
    assert (g16 - g32).norm() < 0.2 * g32.norm()         # rounded activations: a gradient within a few % of fp32's


def test_one_function_per_setting_and_clear_errors():
    assert compute.training_loss(CE, "bf16") is compute.training_loss(CE, "bf16")
    assert segmentation.pixel_loss(255) is segmentation.pixel_loss(255)   # so a compiled loss is built once
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, got 'fp16'"):
        compute.training_loss(CE, "fp16")
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, got 'int8'"):
        RunSpec.default(P, "transfer", "map_nonlearned", precision="int8")


def test_fp32_runs_keep_their_recorded_keys_and_bf16_runs_get_their_own():
    fp32 = RunSpec.default(P, "transfer", "map_nonlearned")
    assert "precision" not in fp32.keyed()                             # as every run recorded before the setting
    bf16 = RunSpec.default(P, "transfer", "map_nonlearned", precision="bf16")
    assert bf16.keyed() == fp32.keyed() | {"precision": "bf16"} and bf16.key != fp32.key
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")


def fit(approach: str, compile: bool, precision: str = "fp32") -> torch.Tensor:
    """The parameters after a short smoke-size run of ``approach`` (random initialisation: no prior files needed)."""
    p = RunSpec.default(P, "transfer", approach, steps=8, lr=0.03, n_train=64, precision=precision,
                                  temperature=1.0 if approaches.APPROACHES[approach].bayes else 0.0)
    a = p.approach_
    x, y = batch(64, seed=1)
    torch.manual_seed(0)
    net, prior = transfer.build_model_and_prior(P, p, 10, a)
    fit = transfer.fit_or_sample(net, prior, a, p, x, y, None, CE, compile=compile)
    return torch.cat([v.reshape(-1).float() for v in fit.states[-1].values()])


needs_compile = pytest.mark.skipif(not compute.can_compile(), reason="torch.compile needs a C++ compiler")


@needs_compile
@pytest.mark.parametrize("precision", compute.PRECISIONS)
def test_compiled_loss_and_gradient_agree_with_eager_to_float_rounding(precision):
    x, y = batch()
    net = model()
    (le, ge), (lc, gc) = (grads(net, compute.training_loss(CE, precision, compile=c), x, y) for c in (False, True))
    if precision == "fp32":
        assert torch.allclose(lc, le, rtol=1e-5) and (gc - ge).norm() < 1e-5 * ge.norm()
    else:   # fused kernels keep some bf16 intermediates in fp32: a bf16 rounding of its own, no larger than bf16's
        _, g32 = grads(net, compute.training_loss(CE), x, y)
        assert torch.allclose(lc, le, rtol=1e-2) and (gc - ge).norm() < 2 * (ge - g32).norm()


@needs_compile
@pytest.mark.parametrize("approach", ["map_nonlearned", "bayes_nonlearned"])
def test_compiled_training_agrees_with_eager_on_the_smoke_profile(approach):
    # fused kernels round differently, and 8 steps of training carry that into the parameters: far below what bf16
    # changes (next test), far above a single op's rounding
    eager, compiled = fit(approach, compile=False), fit(approach, compile=True)
    assert (compiled - eager).norm() < 1e-3 * eager.norm(), (compiled - eager).norm() / eager.norm()


def test_a_bf16_run_stays_close_to_its_fp32_twin():
    fp32, bf16 = fit("map_nonlearned", False), fit("map_nonlearned", False, "bf16")
    assert 1e-4 * fp32.norm() < (bf16 - fp32).norm() < 1e-2 * fp32.norm(), (bf16 - fp32).norm() / fp32.norm()
