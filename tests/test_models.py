"""Backbones (CIFAR ResNets, torchvision ResNet-50) and the paper profile's loading code, without downloads."""
import pytest
import torch
import torchvision
from PIL import Image

from repro.data.imagenet import imagenet_split, imagenet_transform
from repro.models import pretrained
from repro.models.pretrained import load_simclr_backbone, simclr_to_torchvision
from repro.models import (BACKBONES, BasicBlock, CifarResNet, DeepLabV3Plus, TorchvisionBackbone, build_backbone,
                          build_classifier, count_parameters, fold_batchnorm, for_evaluation)
from repro.method.priors import check_layout, parameter_layout


# ------------------------------------------------------------------------------------------------
# CIFAR ResNets
# ------------------------------------------------------------------------------------------------

def cifar_resnet_params(depth: int, w: int) -> int:
    """Hand count: 3x3 convs without bias, BatchNorm = 2 per channel, 1x1 conv + BN shortcut on widening."""
    n = (depth - 2) // 6
    conv3 = lambda c_in, c_out: 9 * c_in * c_out
    bn = lambda c: 2 * c
    stem = conv3(3, w) + bn(w)
    total = stem
    c_in = w
    for c in (w, 2 * w, 4 * w):
        for b in range(n):
            cin = c_in if b == 0 else c
            total += conv3(cin, c) + bn(c) + conv3(c, c) + bn(c)
            if cin != c:                                   # first block of stages 2 and 3
                total += cin * c + bn(c)
        c_in = c
    return total


def test_cifar_resnet20_parameter_count():
    model = CifarResNet(20, 16)
    assert cifar_resnet_params(20, 16) == 271_824           # the formula itself, pinned
    assert count_parameters(model) == 271_824
    assert count_parameters(CifarResNet(8, 8)) == cifar_resnet_params(8, 8)
    assert count_parameters(build_classifier("resnet20", 10, width=16)) == 271_824 + 64 * 10 + 10


def test_cifar_resnet_shapes_and_uint8_input():
    torch.manual_seed(0)
    model = CifarResNet(8, 8).eval()
    assert model.out_features == 32 and model.low_level_features == 8
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        feats = model(x)
        low, final = model.feature_maps(x)
        from_float = model(x.float() / 255)
    assert feats.shape == (2, 32)
    assert low.shape == (2, 8, 32, 32) and final.shape == (2, 32, 8, 8)
    torch.testing.assert_close(feats, from_float)
    # the normalisation really happens: raw 0..255 floats give something else
    assert not torch.allclose(feats, model(x.float()).detach(), atol=1e-3)


@pytest.mark.parametrize("depth", [7, 9, 2, 21])
def test_cifar_resnet_invalid_depth(depth):
    with pytest.raises(ValueError, match=rf"6n \+ 2.*got {depth}"):
        CifarResNet(depth)


def test_build_backbone_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as e:
        build_backbone("nope")
    msg = str(e.value)
    assert "'nope'" in msg
    for name in BACKBONES:
        assert name in msg


def test_build_backbone_passes_width():
    assert build_backbone("resnet14", width=4).out_features == 16


def test_classifier_parameter_order_is_backbone_then_head():
    model = build_classifier("resnet8", 10, width=4)
    params = list(model.parameters())
    expected = list(model.backbone.parameters()) + list(model.head.parameters())
    assert len(params) == len(expected) and all(a is b for a, b in zip(params, expected))
    names = [n for n, _ in model.named_parameters()]
    assert names[-2:] == ["head.weight", "head.bias"]
    assert all(n.startswith("backbone.") for n in names[:-2])


def test_parameter_layout_of_backbone():
    backbone = build_backbone("resnet20", width=16)
    layout = parameter_layout(backbone)
    # 21 convs (stem + 18 in blocks + 2 shortcuts), each followed by a BatchNorm (weight + bias)
    assert len(layout) == 21 + 2 * 21
    assert layout[:3] == [("stem.0.weight", (16, 3, 3, 3)), ("stem.1.weight", (16,)), ("stem.1.bias", (16,))]
    assert layout[-1] == ("stages.2.2.bn2.bias", (64,))
    assert ("stages.1.0.shortcut.0.weight", (32, 16, 1, 1)) in layout
    assert sum(torch.Size(s).numel() for _, s in layout) == 271_824
    # the prior's layout check accepts the same architecture and rejects another width
    check_layout(layout, build_backbone("resnet20", width=16))
    with pytest.raises(Exception, match="does not match"):
        check_layout(layout, build_backbone("resnet20", width=8))


# ------------------------------------------------------------------------------------------------
# torchvision ResNet-50
# ------------------------------------------------------------------------------------------------

def test_torchvision_resnet50_backbone():
    backbone = TorchvisionBackbone("resnet50", weights=None).eval()
    assert count_parameters(backbone) == 23_508_032
    assert backbone.out_features == 2048 and backbone.low_level_features == 256
    x = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        feats = backbone(x)
        low, final = backbone.feature_maps(x)
    assert feats.shape == (1, 2048)
    assert low.shape == (1, 256, 16, 16) and final.shape == (1, 2048, 2, 2)
    torch.testing.assert_close(final.mean((2, 3)), feats)   # forward = global pool of the final map


# ------------------------------------------------------------------------------------------------
# Evaluation with BatchNorm folded into the convolutions
# ------------------------------------------------------------------------------------------------

def random_batchnorm_(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial running statistics and affine parameters, so that folding has something to get wrong."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.randn(c, generator=g))
                m.bias.copy_(torch.randn(c, generator=g))
    return model


@pytest.mark.parametrize("make, size", [
    (lambda: build_classifier("resnet8", 10, width=8), (32, 32)),
    (lambda: DeepLabV3Plus(CifarResNet(8, 8), 12, channels=16, rates=(1, 2, 3)), (45, 60)),
    (lambda: TorchvisionBackbone("resnet50", weights=None), (64, 64)),
], ids=["cifar-classifier", "deeplab", "resnet50"])
def test_fold_batchnorm_is_the_same_function_in_eval_mode(make, size):
    model = random_batchnorm_(make()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())   # every BN follows a conv here
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched
    x = torch.randint(0, 256, (3, 3, *size), dtype=torch.uint8)
    with torch.no_grad():
        expected = model.eval()(x)
        # float rounding only: 50 random-BN layers of ResNet-50 amplify it, so the tolerance scales with the output
        for fast in (folded, for_evaluation(model)):
            torch.testing.assert_close(fast(x), expected, rtol=1e-3, atol=1e-4 * expected.abs().max().item())


def test_fold_batchnorm_leaves_a_batchnorm_that_does_not_follow_a_conv():
    model = random_batchnorm_(torch.nn.Sequential(torch.nn.BatchNorm2d(3), torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()))
    folded = fold_batchnorm(model)
    assert isinstance(folded[0], torch.nn.BatchNorm2d)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model.eval()(x))


# ------------------------------------------------------------------------------------------------
# Paper profile: released weights
# ------------------------------------------------------------------------------------------------

def test_torchvision_weights_names_resolve_offline():
    for arch, n_params in (("resnet50", 25_557_032), ("resnet101", 44_549_160)):
        name = pretrained.torchvision_weights(arch)
        assert name.endswith(".IMAGENET1K_V1")
        weights = torchvision.models.get_weight(name)          # enum lookup only, no download
        assert weights.meta["num_params"] == n_params
    with pytest.raises(ValueError, match="resnet50, resnet101"):
        pretrained.torchvision_weights("resnet20")


def test_load_supervised_backbone_requests_the_paper_weights(monkeypatch):
    calls = []
    monkeypatch.setattr(pretrained, "TorchvisionBackbone", lambda arch, weights=None: calls.append((arch, weights)))
    pretrained.load_supervised_backbone("resnet101")
    assert calls == [("resnet101", "ResNet101_Weights.IMAGENET1K_V1")]


@pytest.fixture(scope="module")
def tv_state():
    torch.manual_seed(0)
    return torchvision.models.resnet50().state_dict()


@pytest.fixture(scope="module")
def backbone_keys(tv_state):
    return [k for k in tv_state if not k.startswith("fc.")]


def _head(prefix=""):
    return {f"{prefix}0.weight": torch.randn(4, 2048), f"{prefix}0.bias": torch.randn(4)}


FORMATS = {
    # SimCLR v1 conversion with a `convnet` wrapper and the contrastive head, under state_dict
    "convnet": lambda sd: {"state_dict": {**{f"convnet.{k}": v for k, v in sd.items()},
                                          **_head("contrast_head.")}},
    # SimCLRv2-style container {'resnet': ..., 'head': ...} with torchvision names (as the authors load it)
    "resnet_container": lambda sd: {"resnet": dict(sd), "head": _head()},
    # the authors' nesting: {'state_dict': {'resnet': ...}}
    "nested_container": lambda sd: {"state_dict": {"resnet": dict(sd)}},
    # solo-learn / Lightning checkpoint
    "solo_learn": lambda sd: {"epoch": 99, "global_step": 1, "state_dict": {
        **{f"backbone.{k}": v for k, v in sd.items() if not k.startswith("fc.")},
        **_head("projector."), "classifier.weight": torch.randn(1000, 2048), "classifier.bias": torch.randn(1000)}},
    "lightning_model": lambda sd: {"state_dict": {**{f"model.backbone.{k}": v for k, v in sd.items()},
                                                  **_head("model.projector.")}},
    "ddp": lambda sd: {**{f"module.backbone.{k}": v for k, v in sd.items()}, **_head("module.head.")},
    "torchvision": lambda sd: dict(sd),
    # this package's SimCLR(TorchvisionBackbone) state dict
    "repro_simclr": lambda sd: {**{f"backbone.net.{k}": v for k, v in sd.items() if not k.startswith("fc.")},
                                **_head("projector.")},
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_simclr_to_torchvision_formats(fmt, tv_state, backbone_keys):
    mapped = simclr_to_torchvision(FORMATS[fmt](tv_state))
    assert list(mapped) == backbone_keys
    assert all(mapped[k] is tv_state[k] for k in backbone_keys)


def test_mapped_checkpoint_loads_into_torchvision_backbone(tmp_path, tv_state):
    ckpt = FORMATS["solo_learn"]({k: v.half() for k, v in tv_state.items()})   # half: a smaller file
    del ckpt["state_dict"]["backbone.bn1.num_batches_tracked"]                 # TF conversions may lack these
    path = tmp_path / "simclr.ckpt"
    torch.save(ckpt, path)
    backbone = load_simclr_backbone(path)
    assert isinstance(backbone, TorchvisionBackbone)
    torch.testing.assert_close(backbone.net.layer4[2].conv3.weight, tv_state["layer4.2.conv3.weight"].half().float())
    torch.testing.assert_close(backbone.net.bn1.running_var, tv_state["bn1.running_var"].half().float())


def test_simclr_to_torchvision_missing_layer(tv_state):
    sd = {f"convnet.{k}": v for k, v in tv_state.items() if not k.startswith("layer4.2.conv3.")}
    with pytest.raises(ValueError, match=r"missing keys \(1\): layer4\.2\.conv3\.weight") as e:
        simclr_to_torchvision(sd)
    assert "unexpected" not in str(e.value)


def test_simclr_to_torchvision_unexpected_and_shape_errors(tv_state):
    sd = {f"backbone.{k}": v for k, v in tv_state.items()}
    sd["backbone.extra.weight"] = torch.zeros(1)
    sd["backbone.conv1.weight"] = torch.zeros(64, 3, 3, 3)         # a CIFAR-style stem
    with pytest.raises(ValueError) as e:
        simclr_to_torchvision(sd)
    msg = str(e.value)
    assert "unexpected keys (1): backbone.extra.weight" in msg
    assert "backbone.conv1.weight: (64, 3, 3, 3) vs (64, 3, 7, 7)" in msg
    assert "missing" not in msg


def test_simclr_to_torchvision_duplicates_and_garbage(tv_state):
    sd = {**dict(tv_state), "module.conv1.weight": tv_state["conv1.weight"]}
    with pytest.raises(ValueError, match="same name.*conv1.weight / module.conv1.weight"):
        simclr_to_torchvision(sd)
    with pytest.raises(ValueError, match="no state dict found"):
        simclr_to_torchvision({"epoch": 3, "optimizer": {"lr": 0.1}})
    with pytest.raises(ValueError, match=r"missing keys \(\d+\): bn1.weight, bn1.bias, bn1.running_mean"):
        simclr_to_torchvision({"conv1.weight": tv_state["conv1.weight"]})


# ------------------------------------------------------------------------------------------------
# ImageNet
# ------------------------------------------------------------------------------------------------

def test_imagenet_split_missing_files(tmp_path):
    for split, tar in (("val", "ILSVRC2012_img_val.tar"), ("train", "ILSVRC2012_img_train.tar")):
        with pytest.raises(FileNotFoundError) as e:
            imagenet_split(tmp_path, split)
        assert str(tmp_path) in str(e.value)
        assert tar in str(e.value) and "ILSVRC2012_devkit_t12.tar.gz" in str(e.value)
    with pytest.raises(ValueError, match="train, val"):
        imagenet_split(tmp_path, "test")


def test_imagenet_transforms_give_uint8_224():
    img = Image.new("RGB", (400, 300), (10, 200, 30))
    for train in (True, False):
        out = imagenet_transform(train)(img)
        assert type(out) is torch.Tensor and out.dtype == torch.uint8 and out.shape == (3, 224, 224)
    out = imagenet_transform(False)(img)
    assert out[:, 112, 112].tolist() == [10, 200, 30]


@pytest.mark.parametrize("c_in, c_out, stride", [(8, 8, 1), (8, 16, 2)])
def test_basic_block_is_relu_of_bn_conv_plus_shortcut_with_the_same_gradients(c_in, c_out, stride):
    """The in-place block equals relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x)) written out of place with
    torch.nn.functional, in training mode, bit for bit, and so do its parameter and input gradients."""
    F = torch.nn.functional
    torch.manual_seed(0)
    block = BasicBlock(c_in, c_out, stride).train()
    x = torch.randn(4, c_in, 8, 8, requires_grad=True)

    def bn(t, m):
        return F.batch_norm(t, None, None, m.weight, m.bias, training=True, eps=m.eps)

    def reference(x):
        h = F.relu(bn(F.conv2d(x, block.conv1.weight, stride=stride, padding=1), block.bn1))
        h = bn(F.conv2d(h, block.conv2.weight, padding=1), block.bn2)
        if len(block.shortcut):
            conv, norm = block.shortcut
            short = bn(F.conv2d(x, conv.weight, stride=stride), norm)
        else:
            short = x
        return F.relu(h + short)

    grads = []
    for f in (block, reference):
        out = f(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append([out.detach()] + [t.grad.clone() for t in (x, *block.parameters())])
        x.grad = None
        block.zero_grad(set_to_none=True)
    for mine, ref in zip(*grads):
        assert torch.equal(mine, ref)
