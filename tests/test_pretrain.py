"""The source step (repro.experiments.pretrain.prepare): artifacts, skipping, resuming, and the paper profile's ImageNet
path tested structurally (tiny fake models and a fake ImageNet split: no downloads, no GPU)."""
import copy
import pickle

import pytest
import torch
from torch import nn

from repro import data
from repro.data import imagenet
from repro.experiments import pretrain
from repro.method import swag as swag_module
from repro.method.prior_files import load_prior
from repro.models import Classifier, CifarResNet, TorchvisionBackbone, pretrained
from repro.profiles import get_profile
from repro.experiments.ssl import SimCLR
from repro.train import model_device, resolve_device, to_device

SMOKE = get_profile("smoke")


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path / "results"))
    return tmp_path / "results"


@pytest.fixture(scope="module")
def tiny_imagenet():
    try:
        data.load("tinyimagenet32", "train"), data.load("tinyimagenet32", "val")
    except FileNotFoundError as e:
        pytest.skip(f"tinyimagenet32 absent (set REPRO_DATA_DIR to the shared data): {e}")


def _count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _check_prior(out, profile, kind, backbone: nn.Module) -> dict:
    """Three artifacts; the prior covers exactly ``backbone``; float16 factor with swag_max_rank columns."""
    assert out.pretrained.is_file() and out.swa.is_file() and out.prior.is_file()
    prior = load_prior(out.prior, module=backbone)           # checks names and shapes of the layout
    assert prior.dim == _count_params(backbone)
    raw = torch.load(out.prior, weights_only=True)
    assert raw["factor"].dtype == torch.float16
    assert raw["factor"].shape == (_count_params(backbone), profile.swag_max_rank)
    meta = raw["meta"]
    hp = pretrain.HYPERPARAMETERS[pretrain.base_kind(kind)]
    assert {k: meta[k] for k in hp} == hp
    assert meta["kind"] == kind and meta["profile"] == profile.name
    assert meta["version"] == pretrain.PROTOCOL_VERSION and meta["swag_burnin_epochs"] == profile.swag_burnin_epochs
    assert meta["swag_lr"] in pretrain.SWAG_LRS
    assert len(meta["snapshot_norms"]) == profile.swag_snapshots and meta["start_norm"] > 0
    protocol = {k: v for k, v in meta.items() if k not in ("protocol_hash", "start_norm", "snapshot_norms",
                                                           "swag_snapshots_collected")}
    assert meta["protocol_hash"] == pretrain.protocol_hash(protocol)
    assert meta["swag_snapshots"] == profile.swag_snapshots and meta["batch_size"] == profile.batch_size
    assert meta["source_dataset"] == profile.source_dataset and meta["swag_epochs"] == profile.swag_epochs
    return meta


def _fail(*args, **kwargs):
    raise AssertionError("must not be called")


# --------------------------------------------------------------------------------------------- smoke profile

@pytest.mark.parametrize("kind", ["supervised", "ssl"])
def test_smoke_prepare_artifacts_and_skip(kind, results, tiny_imagenet, monkeypatch):
    profile = get_profile(SMOKE)
    out = pretrain.prepare(SMOKE, kind)
    assert out == pretrain.artifacts(SMOKE, kind) and out.prior.parent == results / "smoke" / "priors"
    model = pretrain.load_source_model(SMOKE, kind)
    assert isinstance(model, Classifier if kind == "supervised" else SimCLR)
    meta = _check_prior(out, profile, kind, model.backbone)
    assert meta["source_train_n"] == profile.source_train_n and meta["model"] == profile.model
    # the SWA-mean model's backbone is the prior mean
    prior = pretrain.load_source_prior(SMOKE, kind)
    flat = torch.cat([p.detach().reshape(-1) for p in model.backbone.parameters()])
    assert torch.allclose(flat, prior.mean)
    # a second call finds the prior and trains nothing
    before = out.prior.stat().st_mtime_ns
    monkeypatch.setattr(pretrain, "fit", _fail)
    monkeypatch.setattr(swag_module, "fit", _fail)
    assert pretrain.prepare(SMOKE, kind) == out
    assert out.prior.stat().st_mtime_ns == before
    # one state per pre-training epoch; the last is the pre-trained checkpoint
    epochs = profile.source_epochs if kind == "supervised" else profile.ssl_epochs
    states = [pretrain.epoch_state(SMOKE, kind, e) for e in range(1, epochs + 2)]
    assert [p.exists() for p in states] == [True] * epochs + [False]
    last, final = torch.load(states[epochs - 1], weights_only=True), torch.load(out.pretrained, weights_only=True)
    assert all(torch.equal(last[k], final[k]) for k in final)


def test_smoke_quality_matched_prior_starts_from_the_chosen_supervised_epoch(results, tiny_imagenet):
    profile = get_profile(SMOKE)
    with pytest.raises(ValueError, match="from_epoch is the supervised epoch"):
        pretrain.prepare(profile, pretrain.MATCHED)
    with pytest.raises(FileNotFoundError, match="pre-train the supervised backbone first"):
        pretrain.prepare(profile, pretrain.MATCHED, from_epoch=1)
    pretrain.prepare(profile, "supervised")
    out = pretrain.prepare(profile, pretrain.MATCHED, from_epoch=1)
    start = torch.load(pretrain.epoch_state(profile, "supervised", 1), weights_only=True)
    matched = torch.load(out.pretrained, weights_only=True)
    assert all(torch.equal(matched[k], start[k]) for k in start)
    model = pretrain.load_source_model(profile, pretrain.MATCHED)
    assert isinstance(model, Classifier)
    meta = _check_prior(out, profile, pretrain.MATCHED, model.backbone)
    assert meta["from_epoch"] == 1
    # a different protocol from the full-strength supervised prior: runs on the two never share a key
    assert pretrain.prior_protocol(profile, pretrain.MATCHED) != pretrain.prior_protocol(profile, "supervised")
    with pytest.raises(ValueError, match="only it takes one"):
        pretrain.prepare(profile, "ssl", from_epoch=1)


def test_smoke_interrupted_swag_resumes(tmp_path, tiny_imagenet, monkeypatch):
    """SWAG over 2 epochs killed after its first: the resumed run saves the prior an uninterrupted run saves."""
    profile = get_profile(SMOKE, swag_epochs=2, swag_burnin_epochs=0)
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path / "reference"))
    reference = torch.load(pretrain.prepare(profile, "supervised").prior, weights_only=True)

    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path / "interrupted"))
    real_fit = pretrain.fit

    def fit_killed_in_second_swag_epoch(model, loss_fn, epoch_batches, *args, desc="", **kwargs):
        if desc.startswith("SWAG"):
            def batches(epoch):
                if epoch == 1:
                    raise KeyboardInterrupt
                return epoch_batches(epoch)
            return real_fit(model, loss_fn, batches, *args, desc=desc, **kwargs)
        return real_fit(model, loss_fn, epoch_batches, *args, desc=desc, **kwargs)

    monkeypatch.setattr(pretrain, "fit", fit_killed_in_second_swag_epoch)
    monkeypatch.setattr(swag_module, "fit", fit_killed_in_second_swag_epoch)
    with pytest.raises(KeyboardInterrupt):
        pretrain.prepare(profile, "supervised")
    out = pretrain.artifacts(profile, "supervised")
    assert out.pretrained.is_file() and not out.prior.exists()
    assert (out.prior.parent.parent / "checkpoints" / "supervised_swag_lr0.01.ckpt").is_file()

    steps = []

    def counting_fit(model, loss_fn, *args, **kwargs):
        return real_fit(model, lambda m, b: steps.append(1) or loss_fn(m, b), *args, **kwargs)

    monkeypatch.setattr(pretrain, "fit", counting_fit)
    monkeypatch.setattr(swag_module, "fit", counting_fit)
    resumed = torch.load(pretrain.prepare(profile, "supervised").prior, weights_only=True)
    assert len(steps) == profile.source_train_n // profile.batch_size    # only the second SWAG epoch ran
    for key in ("mean", "diag", "factor"):
        assert torch.equal(resumed[key], reference[key]), key


# --------------------------------------------------------------------------------------------- paper profile

N_FAKE = 40


class FakeImageNet(torch.utils.data.Dataset):
    """Random uint8 images with labels, transformed like torchvision's ImageNet dataset."""

    def __init__(self, transform, n=N_FAKE, side=40):
        g = torch.Generator().manual_seed(123)
        self.images = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g)
        self.labels = torch.randint(0, imagenet.NUM_CLASSES, (n,), generator=g).tolist()
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def _paper(**overrides):
    knobs = dict(device="cpu", model="resnet8", width=4, image_size=32, batch_size=4, swag_epochs=0.6,
                 swag_burnin_epochs=0, swag_snapshots=3, swag_max_rank=2)
    return get_profile("paper", **{**knobs, **overrides})


@pytest.fixture
def fake_paper(tmp_path, results, monkeypatch):
    """Fake ImageNet split and released models (CIFAR ResNet-8 width 4); records every call."""
    calls = {"split": [], "supervised": [], "simclr": [], "released": {}}
    monkeypatch.setenv("REPRO_DATA_DIR", str(tmp_path / "data"))

    def split(root, which, image_size=224, train_transform=None, transform=None):
        calls["split"].append((root, which, image_size, train_transform, transform))
        if transform is None:
            transform = imagenet.imagenet_transform(which == "train" if train_transform is None else train_transform,
                                                    image_size)
        return FakeImageNet(transform)

    def supervised(arch):
        calls["supervised"].append(arch)
        model = Classifier(CifarResNet(8, 4), imagenet.NUM_CLASSES)
        calls["released"] = copy.deepcopy(model.state_dict())
        return model

    def simclr(path):
        calls["simclr"].append(path)
        backbone = CifarResNet(8, 4)
        calls["released"] = copy.deepcopy(backbone.state_dict())
        return backbone

    monkeypatch.setattr(imagenet, "imagenet_split", split)
    monkeypatch.setattr(pretrained, "load_supervised_classifier", supervised)
    monkeypatch.setattr(pretrained, "load_simclr_backbone", simclr)
    monkeypatch.setattr(pretrain, "_loader_workers", lambda: 0)
    checkpoint = tmp_path / "simclr_r50.pth"
    checkpoint.write_bytes(b"not read: the loader is faked")
    monkeypatch.setenv("REPRO_SIMCLR_CHECKPOINT", str(checkpoint))
    calls["checkpoint"] = checkpoint
    calls["root"] = tmp_path / "data" / "imagenet"
    return calls


def _spy_fit(monkeypatch):
    """Wraps pretrain.fit: records (desc, steps run, ids of the optimised parameters) per stage."""
    stages, real_fit = [], pretrain.fit

    def spy(model, loss_fn, epoch_batches, optimizer, epochs, *args, desc="", **kwargs):
        stage = {"desc": desc, "steps": 0, "epochs": epochs,
                 "params": {id(p) for g in optimizer.param_groups for p in g["params"]}}
        stages.append(stage)

        def loss(m, batch):
            stage["steps"] += 1
            return loss_fn(m, batch)
        return real_fit(model, loss, epoch_batches, optimizer, epochs, *args, desc=desc, **kwargs)

    monkeypatch.setattr(pretrain, "fit", spy)
    monkeypatch.setattr(swag_module, "fit", spy)
    return stages


def test_paper_supervised_structure(fake_paper, monkeypatch):
    profile = _paper()
    stages = _spy_fit(monkeypatch)
    out = pretrain.prepare(profile, "supervised")
    assert fake_paper["supervised"] == ["resnet8"] and fake_paper["simclr"] == []
    root, which, size, _, transform = fake_paper["split"][0]
    assert (root, which, size) == (fake_paper["root"], "train", 32)
    assert [s[3] for s in fake_paper["split"][1:]] == [None]     # BatchNorm images: the train (augmenting) transform
    # no pre-training: the pretrained artifact is the released model, then a fractional SWAG epoch
    released = torch.load(out.pretrained, weights_only=True)
    assert all(torch.equal(released[k], v) for k, v in fake_paper["released"].items())
    steps_per_epoch = N_FAKE // profile.batch_size                          # 10
    assert [(s["desc"], s["epochs"], s["steps"]) for s in stages] == [("SWAG supervised", 1, 6)]
    model = pretrain.load_source_model(profile, "supervised")
    assert model.head.out_features == imagenet.NUM_CLASSES
    meta = _check_prior(out, profile, "supervised", model.backbone)
    assert meta["source_train_n"] == N_FAKE and meta["epochs"] == 0
    assert meta["weights"] == "torchvision IMAGENET1K_V1" and int(0.6 * steps_per_epoch) == 6
    # the supervised prior covers the backbone, not the 1000-way head
    assert load_prior(out.prior).dim == _count_params(model.backbone) < _count_params(model)


def test_paper_ssl_structure(fake_paper, monkeypatch):
    profile = _paper()
    stages = _spy_fit(monkeypatch)
    out = pretrain.prepare(profile, "ssl")
    assert fake_paper["simclr"] == [fake_paper["checkpoint"]] and fake_paper["supervised"] == []
    transform = fake_paper["split"][0][4]
    assert isinstance(transform, imagenet.SimCLRViews) and transform.size == 32 and transform.blur
    # stage 1: the projector alone, one epoch, backbone frozen (weights and BatchNorm statistics untouched)
    assert [(s["desc"], s["epochs"], s["steps"]) for s in stages] == [
        ("fit the SimCLR projector", pretrain.PROJECTOR_EPOCHS, 10), ("SWAG ssl", 1, 6)]
    model = pretrain.load_source_model(profile, "ssl", which="pretrained")
    assert isinstance(model, SimCLR)
    fitted = torch.load(out.pretrained, weights_only=True)
    for k, v in fake_paper["released"].items():
        assert torch.equal(fitted[f"backbone.{k}"], v), k
    # stage 2: SWAG over the whole model (backbone included); the prior is its backbone marginal
    swa = pretrain.load_source_model(profile, "ssl")
    assert not torch.equal(swa.backbone.stem[0].weight, fitted["backbone.stem.0.weight"])
    meta = _check_prior(out, profile, "ssl", swa.backbone)
    assert meta["weights"] == str(fake_paper["checkpoint"]) and meta["projector_epochs"] == pretrain.PROJECTOR_EPOCHS


def test_paper_projector_stage_optimises_the_projector_only(fake_paper, monkeypatch):
    stages = _spy_fit(monkeypatch)
    pretrain.prepare(_paper(), "ssl")
    model = pretrain.load_source_model(_paper(), "ssl")
    assert len(stages[0]["params"]) == len(list(model.projector.parameters()))
    assert len(stages[1]["params"]) == len(list(model.parameters()))


def test_paper_whole_swag_epochs_and_too_few_steps(fake_paper, monkeypatch):
    stages = _spy_fit(monkeypatch)
    pretrain.prepare(_paper(swag_epochs=2, swag_snapshots=4), "supervised")
    assert [(s["epochs"], s["steps"]) for s in stages] == [(2, 20)]
    with pytest.raises(ValueError, match="SWAG collects over 1 steps for 3 snapshots"):
        pretrain.prepare(_paper(swag_epochs=0.1), "ssl")


def test_paper_burn_in_runs_before_the_collection(fake_paper, monkeypatch):
    """0.5 epoch of burn-in (5 steps) then 0.6 epoch of collection (6 steps, a snapshot every 2): 11 steps in
    2 epochs; the backbone's norm is recorded at the start and at each of the 3 snapshots."""
    stages = _spy_fit(monkeypatch)
    out = pretrain.prepare(_paper(swag_burnin_epochs=0.5), "supervised")
    assert [(s["desc"], s["epochs"], s["steps"]) for s in stages] == [("SWAG supervised", 2, 11)]
    meta = load_prior(out.prior).meta
    assert meta["swag_burnin_epochs"] == 0.5 and len(meta["snapshot_norms"]) == 3


def test_paper_needs_a_gpu(results, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(imagenet, "imagenet_split", _fail)
    monkeypatch.setattr(pretrained, "load_supervised_classifier", _fail)
    assert get_profile("paper").device == "cuda"
    assert pretrain.source_kinds(get_profile("paper")) == ("supervised", "ssl")
    with pytest.raises(ValueError, match="fits the kinds supervised, ssl"):
        pretrain.prepare(get_profile("paper"), pretrain.MATCHED, from_epoch=1)
    for kind in pretrain.source_kinds(get_profile("paper")):
        with pytest.raises(RuntimeError, match="the paper profile needs a GPU") as e:
            pretrain.prepare(get_profile("paper"), kind)
        assert "device='cpu'" in str(e.value)
    with pytest.raises(RuntimeError, match="needs a GPU"):
        resolve_device("cuda")


def test_paper_ssl_needs_the_simclr_checkpoint(results, tmp_path, monkeypatch):
    monkeypatch.setattr(imagenet, "imagenet_split", _fail)
    monkeypatch.setattr(pretrained, "load_simclr_backbone", _fail)
    monkeypatch.delenv("REPRO_SIMCLR_CHECKPOINT", raising=False)
    with pytest.raises(FileNotFoundError, match="REPRO_SIMCLR_CHECKPOINT is not set"):
        pretrain.prepare(_paper(), "ssl")
    monkeypatch.setenv("REPRO_SIMCLR_CHECKPOINT", str(tmp_path / "nope.pth"))
    with pytest.raises(FileNotFoundError, match="REPRO_SIMCLR_CHECKPOINT=.*nope.pth.*does not name an existing file"):
        pretrain.prepare(_paper(), "ssl")
    with pytest.raises(ValueError, match="no ResNet-101"):
        (tmp_path / "r50.pth").write_bytes(b"")
        monkeypatch.setenv("REPRO_SIMCLR_CHECKPOINT", str(tmp_path / "r50.pth"))
        pretrain.prepare(_paper(model="resnet101"), "ssl")


def test_paper_missing_imagenet_fails_before_loading_weights(results, tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(pretrained, "load_supervised_classifier", _fail)
    with pytest.raises(FileNotFoundError, match="ILSVRC2012_devkit_t12.tar.gz"):
        pretrain.prepare(_paper(), "supervised")


# --------------------------------------------------------------------------------------------- pieces

def test_simclr_views_224():
    from PIL import Image
    views = imagenet.SimCLRViews(224)
    image = Image.fromarray(torch.randint(0, 256, (250, 300, 3), dtype=torch.uint8).numpy())
    out = views(image)
    assert out.shape == (2, 3, 224, 224) and out.dtype == torch.uint8
    again = pickle.loads(pickle.dumps(views))                 # DataLoader workers under spawn/forkserver
    assert again(torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)).shape == (2, 3, 224, 224)
    assert "GaussianBlur" in repr(views._built[2]) and views._build()[2].transforms[0].kernel_size == (23, 23)
    assert imagenet.SimCLRViews(32, blur=False)(torch.zeros(3, 32, 32, dtype=torch.uint8)).shape == (2, 3, 32, 32)


def test_load_supervised_classifier_keeps_the_torchvision_head(monkeypatch):
    """No download: the weights enum is faked; the Classifier must compute torchvision's resnet50 logits."""
    import torchvision
    torch.manual_seed(0)
    reference = torchvision.models.resnet50().eval()
    asked = []

    class FakeWeights:
        def get_state_dict(self, **kwargs):
            return reference.state_dict()

    def get_weight(name):
        asked.append(name)
        return FakeWeights()

    monkeypatch.setattr(torchvision.models, "get_weight", get_weight)
    model = pretrained.load_supervised_classifier("resnet50").eval()
    assert asked == ["ResNet50_Weights.IMAGENET1K_V1"]
    assert isinstance(model, Classifier) and isinstance(model.backbone, TorchvisionBackbone)
    assert torch.equal(model.head.weight, reference.fc.weight) and torch.equal(model.head.bias, reference.fc.bias)
    x = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(model.backbone.normalize(x)), atol=1e-5)
    with pytest.raises(ValueError, match="resnet50, resnet101"):
        pretrained.load_supervised_classifier("resnet18")


def test_to_device_is_a_no_op_on_the_models_device():
    model = nn.Linear(2, 2)
    device = model_device(model)
    assert device == torch.device("cpu") and model_device(nn.ReLU()) == torch.device("cpu")
    x, y = torch.zeros(3, 2), torch.zeros(3)
    batch = (x, y)
    assert to_device(batch, device) is batch and to_device(x, device) is x
    listed = [x, y, "meta"]
    assert to_device(listed, device) is listed
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_prior_fitted_under_another_protocol_is_refused_not_overwritten(results, tiny_imagenet, monkeypatch):
    out = pretrain.prepare(SMOKE, "supervised")
    before = out.prior.stat().st_mtime_ns
    monkeypatch.setattr(pretrain, "fit", _fail)
    monkeypatch.setattr(swag_module, "fit", _fail)
    with pytest.raises(ValueError, match=r"another protocol \(swag_epochs: stored 1, now 2\).*delete supervised_prior.pt"):
        pretrain.prepare(get_profile(SMOKE, swag_epochs=2), "supervised")
    # a prior from before protocol versions (no "version" in its meta) is stale too
    raw = torch.load(out.prior, weights_only=True)
    del raw["meta"]["version"]
    torch.save(raw, out.prior)
    with pytest.raises(ValueError, match=f"version: stored none, now {pretrain.PROTOCOL_VERSION}"):
        pretrain.prepare(SMOKE, "supervised")
    assert out.prior.stat().st_mtime_ns != before and load_prior(out.prior).dim > 0   # still there, untouched by prepare


def test_an_unreadable_prior_is_reported_with_the_command_that_fits_it_again(smoke_priors_dir, tmp_path, monkeypatch):
    """A truncated prior file: the workers' check loads it and names the command; that command's notebook 01 counts
    it as missing, and its fit sets the file aside (kept as <name>.unreadable) before fitting the prior again."""
    import shutil
    from repro import reproduce
    from repro.experiments import source_quality
    from repro.runner import MissingPrerequisite

    shutil.copytree(smoke_priors_dir, tmp_path / "results")
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path / "results"))
    P = get_profile("smoke")
    pretrain.require_priors(P)                                      # every prior loads
    path = pretrain.artifacts(P, "ssl").prior
    path.write_bytes(path.read_bytes()[:1000])                       # truncated
    with pytest.raises(MissingPrerequisite, match="not a readable prior file") as e:
        pretrain.require_priors(P)
    assert e.value.command == "python -m repro.reproduce --profile smoke --claims C1"
    assert path in reproduce.priors_missing(P)                       # so --claims C1 runs notebook 01 again

    class Refit(Exception):
        pass

    def refit(*args, **kwargs):
        raise Refit
    monkeypatch.setattr(pretrain, "prepare", refit)
    with pytest.warns(UserWarning, match="set aside as ssl_prior.pt.unreadable"), pytest.raises(Refit):
        source_quality.fit_stationary(P, "ssl")
    assert not path.exists() and path.with_name("ssl_prior.pt.unreadable").stat().st_size == 1000
