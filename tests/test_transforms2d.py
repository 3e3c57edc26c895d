"""2D radiograph transforms: real PNGs of every size/mode, real CR DICOM polarity, hand-computed values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.transforms import Resize
from PIL import Image

from ldoctor.io.radiograph import check_png, read_dicom_grey, read_png_grey, read_radiograph
from ldoctor.transforms.radiograph import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DequantizeUint8d,
    QuantizeUint8d,
    RadiographAugmentation,
    radiograph_postprocess,
    radiograph_preprocess,
    resize_uint8_batch,
)
from tests.fixtures.images import write_radiograph_dicom

DATA = Path(__file__).parent / "data" / "nih"
REAL_PNGS = sorted((DATA / "images").glob("*/*.png"))
RG1_CUT = DATA / "RG1_UNCI_4x_downsampled.dcm"
RG1_FULL = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom" / "RG1_UNCI.dcm"


def _sample(path) -> dict:
    return {"image": str(path), "label": np.zeros(14, np.float32), "id": Path(path).name}


def test_real_files_are_there():
    sizes = {Image.open(p).size[0] for p in REAL_PNGS}
    modes = {Image.open(p).mode for p in REAL_PNGS}
    assert sizes == {1024, 512, 256, 128} and modes == {"L", "RGB"}


@pytest.mark.parametrize("path", REAL_PNGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_real_images_of_every_size_and_mode_give_the_same_tensor(path):
    cached = radiograph_preprocess(224)(_sample(path))
    image = cached["image"]
    assert image.dtype == torch.uint8 and image.shape == (1, 224, 224)
    # a radiograph uses most of the grey range: air/background dark, bone bright
    assert int(image.min()) < 40 and int(image.max()) > 200
    out = radiograph_postprocess(None, 224)(cached)["image"]
    assert out.dtype == torch.float32 and out.shape == (3, 224, 224)
    low = min((0.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    high = max((1.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    assert low - 1e-5 <= float(out.min()) and float(out.max()) <= high + 1e-5
    # the three channels hold the same grey image, normalised with each channel's ImageNet statistics
    grey = image[0].float() / 255
    for c in range(3):
        torch.testing.assert_close(out[c], (grey - IMAGENET_MEAN[c]) / IMAGENET_STD[c], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[2] * IMAGENET_STD[2] + IMAGENET_MEAN[2], grey, atol=1e-5, rtol=0)


def test_one_real_radiograph_at_1024_512_and_128_rgb_agrees():
    """The same NIH image (00000001_000) from three sources ends up as (nearly) the same tensor."""
    paths = [DATA / "images" / d / "00000001_000.png" for d in ("1024", "512", "128rgb")]
    images = [radiograph_preprocess(128)(_sample(p))["image"][0].float().flatten() for p in paths]
    for other in images[1:]:
        corr = float(torch.corrcoef(torch.stack([images[0], other]))[0, 1])
        assert corr > 0.95, corr
        assert float((images[0] - other).abs().mean()) < 20  # grey levels of 255


def test_png_decoding_by_mode_hand_computed(tmp_path):
    grey8 = np.array([[0, 51, 255]], np.uint8)
    Image.fromarray(grey8, mode="L").save(tmp_path / "l.png")
    np.testing.assert_allclose(read_png_grey(tmp_path / "l.png"), [[0.0, 0.2, 1.0]], atol=1e-7)
    grey16 = np.array([[0, 13107, 65535]], np.uint16)
    Image.fromarray(grey16).save(tmp_path / "i16.png")
    np.testing.assert_allclose(read_png_grey(tmp_path / "i16.png"), [[0.0, 0.2, 1.0]], atol=1e-7)
    rgb = np.zeros((1, 3, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[0, 2] = (0, 0, 255)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "rgb.png")
    # ITU-R 601-2 luma as PIL rounds it: 0.299 * 255, 0.587 * 255, 0.114 * 255
    expected = np.array([[76, 150, 29]]) / 255
    np.testing.assert_allclose(read_png_grey(tmp_path / "rgb.png"), expected, atol=1.01 / 255)


def test_truncated_png_is_caught_cheaply_and_on_decode(tmp_path):
    src = REAL_PNGS[0]
    data = src.read_bytes()
    bad = tmp_path / "cut.png"
    bad.write_bytes(data[: len(data) // 2])
    assert check_png(src) is None
    assert "truncated" in check_png(bad)
    (tmp_path / "text.png").write_text("not an image at all, but long enough")
    assert "signature" in check_png(tmp_path / "text.png")
    with pytest.raises(ValueError, match=r"cut\.png: cannot decode"):
        read_png_grey(bad)
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        read_radiograph(tmp_path / "nothere.png")


def _polarity(grey: np.ndarray) -> tuple[float, float, float]:
    """Mean of the mediastinum (central strip) and of the right / left lung fields of a PA chest film."""
    h, w = grey.shape
    rows = slice(int(0.3 * h), int(0.6 * h))
    return (
        float(grey[rows, int(0.45 * w) : int(0.55 * w)].mean()),
        float(grey[rows, int(0.2 * w) : int(0.35 * w)].mean()),
        float(grey[rows, int(0.65 * w) : int(0.8 * w)].mean()),
    )


@pytest.mark.parametrize("path", [RG1_CUT, RG1_FULL], ids=["shipped-4x-cut", "shared-full"])
def test_real_cr_monochrome1_has_dark_lungs(path):
    if not path.is_file():
        pytest.skip(f"{path} not present")
    ds = pydicom.dcmread(path)
    assert ds.Modality == "CR" and ds.PhotometricInterpretation == "MONOCHROME1"
    grey = read_dicom_grey(path)
    assert grey.dtype == np.float32 and 0.0 <= grey.min() and grey.max() <= 1.0
    mediastinum, right, left = _polarity(grey)
    assert mediastinum > right + 0.1 and mediastinum > left + 0.1  # lungs darker than the mediastinum
    raw_mediastinum, raw_right, raw_left = _polarity(ds.pixel_array.astype(np.float64))
    assert raw_mediastinum < raw_right and raw_mediastinum < raw_left  # stored inverted: MONOCHROME1
    # window from the header (centre 15000, width 30000): grey = 1 - clip(x / 30000)
    if path == RG1_CUT:
        expected = 1 - np.clip((ds.pixel_array.astype(np.float64) - 0.0) / 30000.0, 0, 1)
        np.testing.assert_allclose(grey, expected, atol=1e-6)
    cached = radiograph_preprocess(224)(_sample(path))["image"]
    assert cached.shape == (1, 224, 224)


def _write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", **tags) -> Path:
    return write_radiograph_dicom(path, pixels, photometric, **{"Modality": "DX", **tags})


def test_dicom_window_rescale_and_inversion_hand_computed(tmp_path):
    pixels = np.array([[0, 50, 100], [150, 200, 300]], np.uint16)
    # modality: 2 x - 100 -> [-100, 0, 100, 200, 300, 500]; window centre 100 width 400 -> [-100, 300]
    path = _write_dicom(tmp_path / "w.dcm", pixels, RescaleSlope=2, RescaleIntercept=-100,
                        WindowCenter=100, WindowWidth=400)
    expected = np.clip((pixels * 2.0 - 100 + 100) / 400, 0, 1)
    np.testing.assert_allclose(read_dicom_grey(path), expected, atol=1e-6)
    inverted = _write_dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1", RescaleSlope=2, RescaleIntercept=-100,
                            WindowCenter=100, WindowWidth=400)
    np.testing.assert_allclose(read_dicom_grey(inverted), 1 - expected, atol=1e-6)
    plain = _write_dicom(tmp_path / "p.dcm", pixels)  # no window: min-max
    np.testing.assert_allclose(read_dicom_grey(plain), pixels / 300.0, atol=1e-6)


def test_dicom_voi_lut_sequence_hand_computed(tmp_path):
    lut = pydicom.Dataset()
    lut.add_new((0x0028, 0x3002), "US", [4, 0, 8])  # LUT Descriptor: 4 entries, first input 0, 8-bit output
    lut.add_new((0x0028, 0x3006), "US", [0, 85, 170, 255])  # LUT Data
    path = _write_dicom(tmp_path / "lut.dcm", np.array([[0, 1], [2, 3]], np.uint16),
                        VOILUTSequence=pydicom.Sequence([lut]))
    np.testing.assert_allclose(read_dicom_grey(path), [[0, 1 / 3], [2 / 3, 1]], atol=1e-6)


def test_non_radiograph_dicom_is_rejected_with_the_file_name(tmp_path):
    path = _write_dicom(tmp_path / "colour.dcm", np.zeros((2, 2), np.uint16), "PALETTE COLOR")
    with pytest.raises(ValueError, match=r"colour\.dcm: PhotometricInterpretation PALETTE COLOR"):
        read_dicom_grey(path)


def test_quantize_rounds_and_dequantize_inverts():
    q = QuantizeUint8d("image")({"image": torch.tensor([[0.0, 0.5, 0.49 / 255, 1.2, -0.3]])})["image"]
    assert q.dtype == torch.uint8 and q.tolist() == [[0, 128, 0, 255, 0]]
    d = DequantizeUint8d("image")({"image": q})["image"]
    torch.testing.assert_close(d, q.float() / 255)


def test_resize_keeps_aspect_and_pads_black(tmp_path):
    Image.fromarray(np.full((100, 50), 255, np.uint8), mode="L").save(tmp_path / "tall.png")
    image = radiograph_preprocess(64)(_sample(tmp_path / "tall.png"))["image"][0]
    assert image.shape == (64, 64)
    assert image[:, 16:48].min() == 255 and image[:, :16].max() == 0 and image[:, 48:].max() == 0


def test_augmentation_is_random_for_training_and_absent_for_evaluation():
    cached = radiograph_preprocess(64)(_sample(REAL_PNGS[0]))
    always = RadiographAugmentation(prob=1.0)
    train = radiograph_postprocess(always, 64)
    a, b = train(dict(cached))["image"], train(dict(cached))["image"]
    assert a.shape == b.shape == (3, 64, 64)
    assert not torch.equal(a, b)
    evaluation = radiograph_postprocess(None, 64)
    torch.testing.assert_close(evaluation(dict(cached))["image"], evaluation(dict(cached))["image"])
    # small affine + gamma + noise: the image stays close to the original
    plain = evaluation(dict(cached))["image"]
    assert float(torch.corrcoef(torch.stack([a.flatten(), plain.flatten()]))[0, 1]) > 0.6
    with pytest.raises(ValueError, match="prob"):
        radiograph_postprocess(RadiographAugmentation(prob=1.5), 64)


def test_vectorised_array_resize_equals_the_monai_pipeline():
    rng = np.random.default_rng(0)
    for shape in [(5, 28, 28), (4, 28, 28, 3)]:
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        batch = resize_uint8_batch(images, 64, chunk=2)
        resize = Resize((64, 64), mode="bilinear")  # MONAI's own resize, one image at a time
        channels_first = [torch.from_numpy(im).float().reshape(*im.shape[:2], -1).permute(2, 0, 1) / 255 for im in images]
        single = torch.stack([torch.round(torch.as_tensor(resize(im)).clamp(0, 1) * 255).to(torch.uint8)
                              for im in channels_first])
        assert batch.dtype == single.dtype == torch.uint8 and batch.shape == single.shape
        assert int((batch.int() - single.int()).abs().max()) <= 1  # float rounding at .5 only
