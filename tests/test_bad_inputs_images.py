"""Bad image input through the real readers: CT series without (or with a zero) rescale, 16-bit PNGs holding
10-14 bit data, content only in the alpha channel, a CT (or other non-radiograph) DICOM read as a radiograph."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from datamodules.lidc import LIDCDataModule
from ldoctor.errors import BadInput
from ldoctor.io import radiograph
from ldoctor.io.ct import read_ct, read_dicom_series, read_enhanced_ct
from ldoctor.io.radiograph import png_bit_depth, read_dicom_grey, read_png_grey, read_radiograph
from ldoctor.transforms.radiograph import radiograph_preprocess
from tests.fixtures.ct import OneNodulePerVolume, edit, series, small_volume
from tests.fixtures.images import write_radiograph_dicom

DICOM = Path(__file__).parent / "data" / "dicom"  # CT_small.dcm, eCT_Supplemental.dcm (pydicom's test files)
RG1_CUT = Path(__file__).parent / "data" / "nih" / "RG1_UNCI_4x_downsampled.dcm"  # a real CR, MONOCHROME1


def bad_input_under(error: BaseException) -> BadInput:
    """The reader's :class:`BadInput` under MONAI's ``RuntimeError("applying transform ...")`` wrapping."""
    while error is not None and not isinstance(error, BadInput):
        error = error.__cause__
    assert error is not None, "no BadInput in the exception chain"
    return error


# ------------------------------------------------------------------------------------------------ CT rescale


def test_series_without_rescale_tags_is_refused_unless_the_default_is_stated(tmp_path):
    folder, files = series(tmp_path)
    for path in files:
        edit(path, RescaleSlope=None, RescaleIntercept=None)
    with pytest.raises(BadInput, match=r"^" + str(files[0]).replace("\\", r"\\") + ": no RescaleSlope") as err:
        read_dicom_series(folder)
    message = str(err.value)
    assert f"series {folder}" in message and "3 of 3 slices" in message and "default_rescale" in message
    with pytest.raises(BadInput, match="no RescaleSlope/RescaleIntercept"):
        read_ct(folder)  # what the tumor path calls
    # before the fix these voxels came back 1024 HU too bright; with the scanner's rescale stated they are right
    np.testing.assert_array_equal(read_ct(folder, default_rescale=(1, -1024)).hu, small_volume().hu)


def test_one_slice_without_rescale_is_refused_and_a_default_must_match_the_others(tmp_path):
    folder, files = series(tmp_path)
    edit(files[1], RescaleIntercept=None)  # slope kept: half the pair
    with pytest.raises(BadInput, match=rf"{files[1].name}: has RescaleSlope but no \(or an empty\) RescaleIntercept"):
        read_dicom_series(folder)
    edit(files[1], RescaleSlope=None)  # now neither
    with pytest.raises(BadInput, match=rf"{files[1].name}: no RescaleSlope/RescaleIntercept \(1 of 3 slices of "
                                       rf"series .*{folder.name} lack them, while {files[0].name} states slope 1, "
                                       "intercept -1024"):
        read_dicom_series(folder)
    with pytest.raises(BadInput, match=rf"{files[1].name}: .* not the default_rescale \(1.0, 0.0\)"):
        read_dicom_series(folder, default_rescale=(1, 0))
    np.testing.assert_array_equal(read_dicom_series(folder, default_rescale=(1, -1024)).hu, small_volume().hu)


def test_slope_zero_is_refused_naming_the_file(tmp_path):
    folder, files = series(tmp_path)
    edit(files[2], RescaleSlope="0")
    for default in (None, (1, -1024)):
        with pytest.raises(BadInput, match=rf"{files[2].name}: RescaleSlope is 0, which would make every voxel -1024"):
            read_dicom_series(folder, default_rescale=default)
    with pytest.raises(ValueError, match="slope != 0"):
        read_dicom_series(folder, default_rescale=(0, -1024))


def test_real_ct_slice_without_rescale(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    for folder in (good, bad):
        folder.mkdir()
        shutil.copy(DICOM / "CT_small.dcm", folder / "CT_small.dcm")
    edit(bad / "CT_small.dcm", RescaleSlope=None, RescaleIntercept=None)
    expected = read_dicom_series(good).hu  # the tags are there (slope 1, intercept -1024): read as before
    raw = pydicom.dcmread(DICOM / "CT_small.dcm").pixel_array.T.astype(np.float32)
    np.testing.assert_array_equal(expected, (raw - 1024)[..., None])
    with pytest.raises(BadInput, match=r"bad[/\\]CT_small\.dcm: no RescaleSlope/RescaleIntercept"):
        read_ct(bad)
    np.testing.assert_array_equal(read_ct(bad, default_rescale=(1.0, -1024.0)).hu, expected)


def test_enhanced_ct_frames_without_rescale(tmp_path):
    path = tmp_path / "eCT.dcm"
    ds = pydicom.dcmread(DICOM / "eCT_Supplemental.dcm")
    item = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    stated = (float(item.RescaleSlope), float(item.RescaleIntercept))
    del item.RescaleSlope, item.RescaleIntercept
    ds.save_as(path)
    with pytest.raises(BadInput, match=r"eCT\.dcm\[frame 0\]: no RescaleSlope/RescaleIntercept \(2 of 2"):
        read_enhanced_ct(path, require_hu=False)
    np.testing.assert_array_equal(read_enhanced_ct(path, require_hu=False, default_rescale=stated).hu,
                                  read_enhanced_ct(DICOM / "eCT_Supplemental.dcm", require_hu=False).hu)


def test_lidc_datamodule_refuses_a_series_without_rescale_and_reads_it_with_default_rescale(tmp_path):
    root = tmp_path / "root"
    for name in ("a", "b"):
        _, files = series(root, name)
    for path in files:  # series "b"
        edit(path, RescaleSlope=None, RescaleIntercept=None)
    kwargs = {"val_fraction": 0.0, "test_fraction": 0.0, "patch_size_mm": 2.0, "augmentation": None,
              "batch_size": 2}
    dm = LIDCDataModule(OneNodulePerVolume(str(root)), **kwargs)
    with pytest.raises(BadInput) as error:  # the reader's error, not MONAI's "applying transform ..." wrapper
        dm.setup("fit")  # the memory cache fills here, before training
    assert str(error.value).startswith(f"{files[0]}: no RescaleSlope/RescaleIntercept")
    dm = LIDCDataModule(OneNodulePerVolume(str(root)), default_rescale=(1.0, -1024.0), **kwargs)
    dm.setup("fit")
    cubes = [dm.train_dataset.data[i] for i in range(2)]  # the cached cubes, HU window [-1000, 400] -> [0, 1]
    # the centre (-8.5, -4, -1) mm is voxel (1.5, 1, 1): mean HU 150 + 10 + 1 - 1000 = -839 -> window 161 / 1400
    # (read without the rescale, as before the fix, it would be 185 HU -> 0.85)
    for cube in cubes:
        assert abs(float(cube["image"].float().mean()) - 161 / 1400) < 0.01
    with pytest.raises(ValueError, match="default_rescale must be"):
        LIDCDataModule(OneNodulePerVolume(str(root)), default_rescale=(0.0, -1024.0), **kwargs)


# ------------------------------------------------------------------------------------------- radiograph PNGs


def save_grey16(path: Path, values: np.ndarray, sbit: int | None = None) -> Path:
    info = None
    if sbit is not None:
        info = PngInfo()
        info.add(b"sBIT", bytes([sbit]))
    Image.fromarray(values.astype(np.uint16)).save(path, pnginfo=info)
    return path


def test_16bit_png_with_12bit_data_uses_its_bit_depth(tmp_path):
    ramp = np.arange(4096, dtype=np.uint16).reshape(64, 64)  # 12-bit detector data in a 16-bit PNG, no sBIT
    path = save_grey16(tmp_path / "12bit.png", ramp)
    grey = read_png_grey(path)
    np.testing.assert_allclose(grey, ramp / 4095.0, atol=1e-7)
    cached = radiograph_preprocess(64)({"image": str(path)})["image"]
    assert len(np.unique(cached.numpy())) == 256  # all grey levels, not 16
    assert [png_bit_depth(path, m) for m in (200, 1000, 4095, 10000, 65535)] == [8, 10, 12, 14, 16]


def test_16bit_png_sbit_chunk_decides_the_depth(tmp_path):
    values = np.array([[0, 500, 1000]])
    # sBIT 12, raw values: / 4095 (not / 1023 as the maximum alone would say)
    raw = save_grey16(tmp_path / "sbit12.png", values, sbit=12)
    assert radiograph.png_sbit(raw) == 12
    np.testing.assert_allclose(read_radiograph(raw), values / 4095.0, atol=1e-7)
    # sBIT 12 with the values scaled up to 16 bits as the PNG standard asks: / 65535
    scaled = save_grey16(tmp_path / "sbit12_scaled.png", np.array([[0, 32768, 65535]]), sbit=12)
    np.testing.assert_allclose(read_radiograph(scaled), [[0.0, 32768 / 65535, 1.0]], atol=1e-7)
    # sBIT 16: a dark 16-bit image stays dark
    dark = save_grey16(tmp_path / "sbit16.png", values, sbit=16)
    np.testing.assert_allclose(read_radiograph(dark), values / 65535.0, atol=1e-7)


def test_content_only_in_alpha_is_refused(tmp_path):
    alpha = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (8, 1))
    rgba = np.zeros((8, 16, 4), np.uint8)
    rgba[..., 3] = alpha
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")
    with pytest.raises(BadInput, match=r"alpha\.png: RGBA image whose colour channels are all 0 and whose alpha "
                                       r"channel varies \(0\.\.240\)"):
        read_radiograph(tmp_path / "alpha.png")
    la = np.stack([np.zeros_like(alpha), alpha], axis=-1)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    with pytest.raises(RuntimeError) as error:
        radiograph_preprocess(16)({"image": str(tmp_path / "la.png")})  # the ChestX-ray14 DataModule's reader
    assert str(bad_input_under(error.value)).startswith(f"{tmp_path / 'la.png'}: LA image whose colour channels")
    # an ordinary RGBA export (opaque alpha) is read as before, from its colour channels
    rgba[..., :3], rgba[..., 3] = alpha[..., None], 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "opaque.png")
    np.testing.assert_allclose(read_radiograph(tmp_path / "opaque.png"), alpha / 255.0, atol=1.01 / 255)


# ------------------------------------------------------------------------------------------ radiograph DICOM


def test_ct_dicom_is_refused_as_a_radiograph():
    with pytest.raises(BadInput, match=r"CT_small\.dcm: Modality CT; expected a radiograph \(CR, DX, DR, RG\)"):
        read_radiograph(DICOM / "CT_small.dcm")
    with pytest.raises(RuntimeError) as error:
        radiograph_preprocess(32)({"image": str(DICOM / "CT_small.dcm")})  # the ChestX-ray14 DataModule's reader
    assert str(bad_input_under(error.value)).startswith(f"{DICOM / 'CT_small.dcm'}: Modality CT")
    assert read_dicom_grey(RG1_CUT).shape == pydicom.dcmread(RG1_CUT).pixel_array.shape  # a real CR is read


def test_dicom_without_modality_or_ot_is_read_with_one_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(radiograph, "_warned", set())
    pixels = np.array([[0, 100], [200, 300]])
    none = write_radiograph_dicom(tmp_path / "none.dcm", pixels)
    with pytest.warns(UserWarning, match=r"file-[0-9a-f]{10}\.dcm: no Modality; read as a radiograph"):
        grey = read_radiograph(none)
    np.testing.assert_allclose(grey, pixels / 300.0, atol=1e-6)  # no window: min-max, as before
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_radiograph(none)  # warned once per process
    other = write_radiograph_dicom(tmp_path / "ot.dcm", pixels, Modality="OT")
    with pytest.warns(UserWarning, match=r"file-[0-9a-f]{10}\.dcm: Modality OT"):
        read_radiograph(other)
    mr = write_radiograph_dicom(tmp_path / "mr.dcm", pixels, Modality="MR")
    with pytest.raises(BadInput, match=r"mr\.dcm: Modality MR; expected a radiograph"):
        read_radiograph(mr)


def test_12bit_dicom_in_16bit_container_uses_bits_stored_and_window(tmp_path):
    stored = np.array([[0, 1024], [2048, 4095]])
    garbage = stored | 0xF000  # unused high bits set: BitsStored 12 masks them
    path = write_radiograph_dicom(tmp_path / "dx12.dcm", garbage, bits_stored=12, Modality="DX",
                                  WindowCenter=2048, WindowWidth=4096)
    np.testing.assert_allclose(read_radiograph(path), np.clip(stored / 4096.0, 0, 1), atol=1e-6)
    plain = write_radiograph_dicom(tmp_path / "dx12_plain.dcm", stored, bits_stored=12, Modality="DX")
    cached = radiograph_preprocess(8)({"image": str(plain)})["image"]
    assert int(cached.min()) == 0 and int(cached.max()) == 255  # the full grey range
