"""Bad files that only fail when decoded (lazily) end in one error naming the file and what was expected.

Through the real entry points (a DataModule's ``setup`` and its train loader, once ``trainer.fit``): a PNG with
corrupt image data, decompression bombs, DICOM admission images that are multi-frame, compressed without a decoder
or truncated, CT slices and NIfTI volumes cut short, and MedMNIST ``.npz`` files that are empty, not zip archives or
hold object arrays. Before, most ended as MONAI's ``RuntimeError: applying transform <... at 0x...>`` or a library
traceback naming no file.
"""

from __future__ import annotations

import logging
import re
import struct
import zlib
from pathlib import Path

import lightning as L
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import JPEGLosslessSV1

from datamodules.chestxray14 import ChestXray14DataModule
from datamodules.lidc import LIDCDataModule
from datamodules.medmnist import MedMNISTDataModule
from datamodules.mimic import MIMICDrugDataModule
from ldoctor.errors import BadInput
from ldoctor.losses import EqualWeighting
from ldoctor.module import MultiTaskModule
from ldoctor.privacy import redact
from tests.fixtures.ct import OneNodulePerVolume, nifti, series
from tests.fixtures.images import learnable_npz, write_radiograph_dicom
from tests.fixtures.mimic import write_synthetic_mimic
from tests.fixtures.nih import write_nih_dataset
from tests.helpers import tiny_trainer_kwargs

pytestmark = pytest.mark.filterwarnings("ignore:.*prescription rows with an NDC.*")


# -------------------------------------------------------------------------------------------------------- helpers
def corrupt_idat(path: Path) -> Path:
    """Flip every byte of a PNG's compressed image data but the zlib header: signature, IHDR and IEND stay intact,
    so the cheap checks at setup pass and only decoding fails."""
    data = bytearray(path.read_bytes())
    at = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[at - 4 : at])
    for i in range(at + 4 + 2, at + 4 + length):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A ~100-byte grey PNG whose IHDR claims ``width x height`` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
                     + chunk(b"IEND", b""))
    return path


def jpeg_claiming(path: Path, width: int, height: int) -> Path:
    """An 8 x 8 JPEG whose SOF0 header is rewritten to claim ``width x height`` pixels."""
    Image.new("L", (8, 8), 128).save(path, "JPEG")
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def nih_dm(tmp_path: Path, **kwargs) -> tuple[ChestXray14DataModule, list[Path]]:
    """A synthetic NIH folder (8 patients, 16 px) and its DataModule (the train split in one batch); the train images."""
    nih = write_nih_dataset(tmp_path / "nih", num_patients=8, image_size=16, seed=0)
    train = [p for p in nih.image_paths if p.name in set(nih.train_val)]
    dm = ChestXray14DataModule(str(nih.root), image_size=16, batch_size=64, augmentation=None, **kwargs)
    return dm, train


def first_batch(dm) -> dict:
    return next(iter(dm.train_dataloader()))


# ---------------------------------------------------------------------------------------------- ChestX-ray14 PNG
def test_corrupt_png_data_fails_at_setup_with_the_memory_cache(tmp_path):
    dm, train = nih_dm(tmp_path, cache="memory")
    bad = corrupt_idat(train[1])
    with pytest.raises(BadInput, match=rf"^{re.escape(str(bad))}: cannot decode the image") as error:
        dm.setup("fit")  # every image is decoded into the cache here, before training
    assert "expected a complete PNG" in str(error.value) and "set skip_bad=True" in str(error.value)


def test_corrupt_png_data_fails_at_the_first_batch_without_a_cache(tmp_path):
    dm, train = nih_dm(tmp_path, cache="none")
    bad = corrupt_idat(train[0])
    dm.setup("fit")  # nothing is decoded yet: the signature and IEND are intact
    with pytest.raises(BadInput, match=rf"^{re.escape(str(bad))}: cannot decode the image") as error:
        first_batch(dm)
    message = str(error.value)
    assert "expected a complete PNG" in message and "skip_bad cannot leave a sample out" in message
    assert "cache='memory'" in message and "applying transform" not in message


def test_corrupt_png_data_fails_naming_the_file_with_the_disk_cache(tmp_path):
    dm, train = nih_dm(tmp_path, cache="disk", cache_dir=str(tmp_path / "cache"))
    bad = corrupt_idat(train[0])
    dm.setup("fit")
    with pytest.raises(BadInput, match=rf"^{re.escape(str(bad))}: cannot decode the image.*cache='memory'"):
        first_batch(dm)


def test_corrupt_png_is_skipped_counted_and_named_with_skip_bad_and_the_memory_cache(tmp_path, caplog):
    dm, train = nih_dm(tmp_path, cache="memory", skip_bad=True)
    bad = corrupt_idat(train[2])
    with caplog.at_level(logging.WARNING, logger="ldoctor.errors"), \
            pytest.warns(UserWarning, match=r"skipped bad input \(skip_bad=True\): \{'unreadable images': 1\}") as seen:
        dm.setup("fit")
    summary = next(str(w.message) for w in seen if "skipped bad input" in str(w.message))
    assert redact(str(bad)).split(":")[0] in summary  # the file, by its pseudonym
    ((kind, message),) = dm.bad.skipped  # the full message, for the user's own code
    assert kind == "unreadable images" and message.startswith(f"{bad}: cannot decode the image")
    assert "cannot decode" in caplog.text
    used = {r["id"] for split in dm.records.values() for r in split}
    assert bad.name not in used and {p.name for p in train} - {bad.name} <= used  # the other images stay
    batch = first_batch(dm)
    assert sorted(batch["id"]) == sorted(r["id"] for r in dm.records["train"])
    model = MultiTaskModule(dm.tasks, trunk="resnet18", weighting=EqualWeighting)
    trainer = L.Trainer(**tiny_trainer_kwargs(tmp_path, limit_train_batches=1, limit_val_batches=1,
                                              num_sanity_val_steps=0))
    trainer.fit(model, datamodule=dm)  # the other images train
    assert trainer.state.finished and trainer.global_step == 1


def test_decompression_bomb_png_is_refused_at_setup_naming_its_size_and_the_limit(tmp_path):
    dm, train = nih_dm(tmp_path, cache="none")
    bomb = png_claiming(train[0], 20000, 20000)
    assert bomb.stat().st_size < 200
    with pytest.raises(BadInput, match=rf"^{re.escape(str(bomb))}: 20000 x 20000 pixels") as error:
        dm.setup("fit")  # from the IHDR alone, before anything is decoded
    assert f"decompression-bomb limit of {Image.MAX_IMAGE_PIXELS} pixels" in str(error.value)


# --------------------------------------------------------------------------------------------- MIMIC admission images
@pytest.fixture()
def mimic(tmp_path) -> tuple[Path, Path, list[str]]:
    """A synthetic MIMIC-III folder, its NDC map and the training admissions of its default split."""
    truth = write_synthetic_mimic(tmp_path / "mimic", n_patients=12, max_admissions=1)
    dm = MIMICDrugDataModule(mimic_dir=str(truth.folder), ndc_map=str(truth.ndc_map))
    dm.prepare()
    return truth.folder, truth.ndc_map, [r["hadm_id"] for r in dm.splits["train"]]


def mimic_dm(mimic, links: dict[str, Path], **kwargs) -> MIMICDrugDataModule:
    folder, ndc_map, _ = mimic
    csv = folder / "image_links.csv"
    csv.write_text("hadm_id,image_path\n" + "".join(f"{h},{p}\n" for h, p in links.items()))
    return MIMICDrugDataModule(mimic_dir=str(folder), ndc_map=str(ndc_map), images=str(csv), image_size=16,
                               batch_size=64, **kwargs)


def multi_frame(path: Path) -> Path:
    return write_radiograph_dicom(path, np.zeros((32, 16)), Modality="DX", Rows=16, NumberOfFrames=2)


def jpeg_lossless(path: Path) -> Path:
    write_radiograph_dicom(path, np.zeros((16, 16)), Modality="DX")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xc3" + b"\0" * 20 + b"\xff\xd9"])
    ds.save_as(path, enforce_file_format=True)
    return path


def truncated(path: Path) -> Path:
    write_radiograph_dicom(path, np.arange(256).reshape(16, 16), Modality="DX")
    path.write_bytes(path.read_bytes()[:-200])
    return path


BAD_DICOMS = {
    "multi-frame": (multi_frame, r"multi-frame DICOM \(2 frames, NumberOfFrames\); expected one frame"),
    "jpeg-lossless": (jpeg_lossless, r"pixel data is compressed as JPEG Lossless.*no decoder is installed.*pylibjpeg"),
    "truncated": (truncated, r"pixel data is 312 bytes, 16 x 16 pixels .* need 512 bytes \(truncated file\)"),
}


@pytest.mark.parametrize("kind", list(BAD_DICOMS))
def test_bad_dicom_linked_to_an_admission_is_refused_at_setup(mimic, tmp_path, kind):
    write, expected = BAD_DICOMS[kind]
    if kind == "jpeg-lossless" and get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip("a JPEG Lossless decoder is installed here")
    path = write(tmp_path / f"{kind}.dcm")
    dm = mimic_dm(mimic, {mimic[2][0]: path})
    with pytest.raises(BadInput, match=rf"^{re.escape(str(path))}: {expected}") as error:
        dm.setup("fit")  # from the header alone, before training
    assert re.search(r"linked in .*image_links\.csv line 2", str(error.value))


def test_bad_dicoms_linked_to_admissions_are_skipped_and_counted_with_skip_bad(mimic, tmp_path):
    hadms = mimic[2]
    good = write_radiograph_dicom(tmp_path / "good.dcm", np.arange(256).reshape(16, 16), Modality="DX")
    links = {hadm: write(tmp_path / f"{kind}.dcm") for hadm, (kind, (write, _)) in zip(hadms, BAD_DICOMS.items())}
    dm = mimic_dm(mimic, {**links, hadms[3]: good}, skip_bad=True)
    with pytest.warns(UserWarning, match=r"\{'unreadable images': 3\}"):
        dm.setup("fit")
    assert [message.split(":")[0] for _, message in dm.bad.skipped] == [str(p) for p in links.values()]
    batch = first_batch(dm)
    has_image = dict(zip(batch["id"], batch["has_image"].tolist()))
    linked = {i: flag for i, flag in has_image.items() if flag}
    assert [i.split("/")[1] for i in linked] == [hadms[3]]  # only the good DICOM is read


@pytest.mark.parametrize("kind", ["corrupt-png", "jpeg-bomb"])
def test_image_linked_to_an_admission_that_fails_when_decoded_names_the_file(mimic, tmp_path, kind):
    if kind == "corrupt-png":
        Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))).save(tmp_path / "cxr.png")
        path, expected = corrupt_idat(tmp_path / "cxr.png"), r"cannot decode the image .*expected a complete PNG"
    else:
        path = jpeg_claiming(tmp_path / "cxr.jpg", 20000, 20000)
        expected = (r"Image size \(400000000 pixels\) exceeds limit .*\(PIL\.Image\.MAX_IMAGE_PIXELS is "
                    rf"{Image.MAX_IMAGE_PIXELS}; raise it if the image is genuine\)")
    dm = mimic_dm(mimic, {mimic[2][0]: path}, skip_bad=True)
    dm.setup("fit")  # the header checks pass: PNG signature and IEND intact, a JPEG's size is read when decoded
    with pytest.raises(BadInput, match=rf"^{re.escape(str(path))}: {expected}") as error:
        first_batch(dm)
    assert "skip_bad cannot leave a sample out" in str(error.value) and "image links" in str(error.value)


# ------------------------------------------------------------------------------------------------------- LIDC CT
def lidc_dm(root: Path, **kwargs) -> LIDCDataModule:
    return LIDCDataModule(OneNodulePerVolume(str(root)), val_fraction=0.0, test_fraction=0.0, patch_size_mm=4.0,
                          augmentation=None, batch_size=4, **kwargs)


def cut_slice(root: Path) -> Path:
    """Series ``a`` and ``b`` under ``root``; the middle slice of ``b`` loses the last 10 bytes of its pixel data."""
    series(root, "a")
    _, files = series(root, "b")
    files[1].write_bytes(files[1].read_bytes()[:-10])
    return files[1]


def test_truncated_ct_slice_fails_at_setup_with_the_memory_cache(tmp_path):
    cut = cut_slice(tmp_path / "root")
    with pytest.raises(BadInput, match=rf"^{re.escape(str(cut))}: pixel data is 14 bytes, 3 x 4 pixels .* need 24 "
                                       r"bytes \(truncated file\); expected a complete CT slice") as error:
        lidc_dm(tmp_path / "root").setup("fit")
    assert "set skip_bad=True" in str(error.value)


def test_truncated_ct_slice_fails_at_the_first_batch_without_a_cache(tmp_path):
    cut = cut_slice(tmp_path / "root")
    dm = lidc_dm(tmp_path / "root", cache="none")
    dm.setup("fit")
    with pytest.raises(BadInput, match=rf"^{re.escape(str(cut))}: pixel data is 14 bytes.*expected a complete CT "
                                       r"slice.*skip_bad cannot leave a sample out.*cache='memory'"):
        first_batch(dm)


def test_truncated_ct_slice_is_skipped_and_counted_with_skip_bad_and_the_memory_cache(tmp_path):
    cut = cut_slice(tmp_path / "root")
    dm = lidc_dm(tmp_path / "root", skip_bad=True)
    with pytest.warns(UserWarning, match=r"\{'unreadable volumes': 1\}"):
        dm.setup("fit")
    ((_, message),) = dm.bad.skipped
    assert message.startswith(f"{cut}: pixel data is 14 bytes")
    assert [r["id"] for r in dm.splits["train"]] == ["a"] and first_batch(dm)["id"] == ["a"]


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_truncated_nifti_fails_naming_the_file(tmp_path, cache):
    noise = np.random.default_rng(0).normal(-500.0, 300.0, (8, 8, 8))  # gzip cannot shrink it: the cut hits voxels
    series(tmp_path / "root", "a")
    path = nifti(tmp_path / "root" / "b.nii.gz", noise)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    dm = lidc_dm(tmp_path / "root", cache=cache)
    expected = (rf"^{re.escape(str(path))}: cannot read its voxels \(EOFError: .*\); expected a complete 3D NIfTI "
                r"volume")
    with pytest.raises(BadInput, match=expected):
        dm.setup("fit")
        first_batch(dm)  # cache="none": the volume is first read here


# ------------------------------------------------------------------------------------------------------ MedMNIST
def zero_bytes(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def not_a_zip(path: Path) -> Path:
    path.write_text("train_images,train_labels\n1,2\n")
    return path


def object_arrays(path: Path) -> Path:
    learnable_npz(path, {"train": 4, "val": 2})
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["train_images"] = np.array([np.zeros((28, 28), np.uint8), np.zeros((27, 27), np.uint8)] * 2, dtype=object)
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("write, found", [(zero_bytes, "an empty file"), (not_a_zip, r"not a zip archive \(\d+ bytes\)"),
                                          (object_arrays, r"train_images cannot be read \(ValueError: Object arrays "
                                                          r"cannot be loaded when allow_pickle=False\)")],
                         ids=["zero-byte", "not-a-zip", "object-array"])
def test_bad_medmnist_npz_names_the_file_and_the_expected_keys(tmp_path, write, found):
    path = write(tmp_path / "medmnist.npz")
    with pytest.raises(BadInput, match=rf"^{re.escape(str(path))}: {found}; expected a MedMNIST \.npz .*train_images "
                                       r".*train_labels"):
        MedMNISTDataModule(npz=str(path), image_size=16).setup("fit")
