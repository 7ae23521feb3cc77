"""The exact data: the study's checksum table, the CIFAR-10 JPEG recipe on a tiny synthetic archive, verification."""
import gzip
import hashlib
import io
import zipfile

import numpy as np
import PIL.Image
import pytest

from repro import data
from repro.data import __main__ as cli, checksums, downloads, formats

TOP = "CIFAR-10-images-d7d05618061fe37d830fb0419063d113c575ccbc"


def _jpeg(seed: int) -> bytes:
    img = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    b = io.BytesIO()
    PIL.Image.fromarray(img).save(b, format="JPEG", quality=75)
    return b.getvalue()


@pytest.fixture
def cifar_archive(tmp_path):
    """A CIFAR-10-images archive in miniature: 2 classes x 2 files per split, written out of order."""
    path, files = tmp_path / "cifar.zip", {}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{TOP}/README.md", "CIFAR-10 raw jpeg images")
        for i, (split, cls, name) in enumerate([("train", "cat", "0001.jpg"), ("train", "airplane", "0001.jpg"),
                                                ("train", "cat", "0000.jpg"), ("train", "airplane", "0000.jpg"),
                                                ("test", "truck", "0000.jpg"), ("test", "bird", "0000.jpg")]):
            files[f"{split}/{cls}/{name}"] = _jpeg(i)
            zf.writestr(f"{TOP}/{split}/{cls}/{name}", files[f"{split}/{cls}/{name}"])
    return path, files


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cifar10_is_packed_from_the_jpeg_files_unchanged(cifar_archive, tmp_path, monkeypatch):
    zip_path, files = cifar_archive
    out = tmp_path / "data" / "cifar10"
    out.mkdir(parents=True)
    downloads._download_cifar10(zip_path, out)
    z = np.load(out / "train.npz")
    assert z.files == ["jpeg", "offsets", "labels", "classes", "names"]          # the study's key order
    assert list(z["names"]) == ["train/airplane/0000.jpg", "train/airplane/0001.jpg", "train/cat/0000.jpg",
                                "train/cat/0001.jpg"] and list(z["labels"]) == [0, 0, 3, 3]   # by class, then name
    o = z["offsets"]
    assert [z["jpeg"][o[i]:o[i + 1]].tobytes() for i in range(4)] == [files[n] for n in z["names"]]   # bytes as they were
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))
    test = data.load("cifar10", "test", root=tmp_path / "data")
    assert test.images.shape == (2, 3, 32, 32) and test.targets.tolist() == [2, 9]


def test_download_checks_what_it_builds_against_the_table(cifar_archive, tmp_path, monkeypatch):
    zip_path, _ = cifar_archive
    monkeypatch.setattr(downloads, "_fetch", lambda url, dest: zip_path)          # offline: the synthetic archive
    root = tmp_path / "data"
    monkeypatch.setattr(checksums, "table", lambda: {})
    built = downloads.download("cifar10", root / "first")                          # no table entry: passes
    table = {f"cifar10/{s}.npz": {"bytes": (built / f"{s}.npz").stat().st_size, "sha256": _sha(built / f"{s}.npz")}
             for s in ("train", "test")}
    monkeypatch.setattr(checksums, "table", lambda: table)
    downloads.download("cifar10", root)                                            # rebuilt: the same bytes
    assert all(v is None for v in checksums.verify(root).values())
    table["cifar10/test.npz"]["sha256"] = "0" * 64                                 # another libjpeg, another recipe
    with pytest.raises(ValueError) as e:
        downloads.download("cifar10", root)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"built, but not the study's data: {root / 'cifar10' / 'test.npz'}: SHA-256 ")
    assert "is not the study's 0000000000000000..." in msg and "cifar10/PROVENANCE.md" in msg


def test_a_regzipped_file_with_the_same_content_passes(tmp_path, monkeypatch):
    raw = b"\x00\x00\x08\x01" + bytes(range(60))
    (tmp_path / "fashion-mnist").mkdir()
    path = tmp_path / "fashion-mnist" / "x.gz"
    path.write_bytes(gzip.compress(raw, mtime=0))
    table = {"fashion-mnist/x.gz": {"bytes": 1, "sha256": "f" * 64, "gunzipped_sha256": hashlib.sha256(raw).hexdigest()}}
    monkeypatch.setattr(checksums, "table", lambda: table)
    assert checksums.check_file(tmp_path, "fashion-mnist/x.gz") is None            # other header, same data
    path.write_bytes(gzip.compress(raw + b"!", mtime=0))
    assert "is not the study's ffffffffffffffff..." in checksums.check_file(tmp_path, "fashion-mnist/x.gz")
    path.unlink()
    assert checksums.check_file(tmp_path, "fashion-mnist/x.gz") == f"{path}: missing"


def test_the_table_lists_exactly_the_files_the_loaders_read(tmp_path):
    read = {str(f.relative_to(tmp_path)) for name in checksums.study_datasets()
            for split in data.DATASETS[name].splits for f in formats._source_files(name, split, tmp_path)}
    assert read == set(checksums.table())
    assert checksums.study_datasets() == ["cifar10", "tinyimagenet32", "camvid", "fashion-mnist"]
    assert all(len(e["sha256"]) == 64 and e["bytes"] > 0 for e in checksums.table().values())


def test_verify_and_presence_check_on_an_empty_directory(tmp_path, capsys):
    assert cli._main(["verify", "--root", str(tmp_path)]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "0 of 11 files are the study's; 11 differ or are missing"
    with pytest.raises(FileNotFoundError, match=r"not in .* fetch it with `make data`"):
        checksums.require_present(tmp_path)
    assert cli._main(["download", "cifar10.1", "--root", str(tmp_path / "no" / "\0")]) == 1   # bad path: one line
    assert capsys.readouterr().err.startswith("error: ")


@pytest.fixture
def real_root():
    root = data.data_dir()
    if not all((root / rel).is_file() for rel in checksums.table()):
        pytest.skip(f"the study's data is not in {root} (set REPRO_DATA_DIR)")
    return root


def test_the_data_directory_is_the_studys(real_root):
    assert {rel: p for rel, p in checksums.verify(real_root).items() if p} == {}


def test_repacking_the_studys_files_gives_them_byte_for_byte(real_root, tmp_path):
    """pack_encoded writes the study's layout exactly, plain (labels) and compressed (masks): what download relies on."""
    for rel in ("cifar10/test.npz", "camvid/val.npz"):
        z = np.load(real_root / rel)
        o, j = z["offsets"], z["jpeg"]
        targets = z["masks"] if "masks" in z.files else z["labels"]
        extra = {k: z[k] for k in z.files if k not in ("jpeg", "offsets", "labels", "masks", "classes", "names")}
        encoded = [j[o[i]:o[i + 1]].tobytes() for i in range(len(o) - 1)]
        out = formats.pack_encoded(tmp_path / rel.replace("/", "_"), encoded, targets, list(z["classes"]),
                                   list(z["names"]), **extra)
        assert _sha(out) == checksums.table()[rel]["sha256"], rel
