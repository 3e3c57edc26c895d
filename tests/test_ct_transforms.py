"""Nodule-centred patches, 3D augmentation before 2.5D views, windowing and normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ldoctor.io.ct import CTVolume, write_ct_series
from ldoctor.transforms.ct import (
    CTAugmentation,
    Views25Dd,
    extract_patch,
    nodule_postprocess,
    nodule_preprocess,
    views_25d,
)
from ldoctor.transforms.radiograph import IMAGENET_MEAN, IMAGENET_STD

GRADIENT = np.array([3.0, -2.0, 5.0])  # HU per mm along x, y, z


def linear_volume(directions: np.ndarray, spacing=(0.7, 0.9, 2.5), shape=(90, 80, 40)) -> CTVolume:
    """HU = GRADIENT . world(mm): trilinear interpolation reproduces it exactly, whatever the grid."""
    affine = np.eye(4)
    affine[:3, :3] = directions * np.asarray(spacing)
    affine[:3, 3] = -(affine[:3, :3] @ (np.asarray(shape) / 2))  # volume centred on the origin
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1).reshape(-1, 3)
    world = (affine[:3, :3] @ ijk.T).T + affine[:3, 3]
    return CTVolume((world @ GRADIENT).reshape(shape).astype(np.float64), affine, "1.2.3", "P", "vol")


@pytest.mark.parametrize(
    "directions",
    [np.eye(3), np.diag([-1.0, 1.0, -1.0]), np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])],
    ids=["LPS", "flipped", "swapped-rows-columns"],
)
def test_patch_samples_world_grid_at_1mm(directions):
    volume = linear_volume(directions)
    center = np.array([4.0, -3.0, 6.5])
    patch = extract_patch(volume, center, size_mm=16, spacing_mm=1.0)
    assert patch.shape == (16, 16, 16)
    offsets = np.arange(16) - 7.5
    a, b, c = 2, 11, 7
    expected = (center + [offsets[a], offsets[b], offsets[c]]) @ GRADIENT
    assert patch[a, b, c] == pytest.approx(expected, abs=1e-3)
    # 1 mm steps along the patch axes change HU by the gradient, in patient (x, y, z) order
    assert patch[a + 1, b, c] - patch[a, b, c] == pytest.approx(GRADIENT[0], abs=1e-3)
    assert patch[a, b + 1, c] - patch[a, b, c] == pytest.approx(GRADIENT[1], abs=1e-3)
    assert patch[a, b, c + 1] - patch[a, b, c] == pytest.approx(GRADIENT[2], abs=1e-3)


def test_patch_outside_the_scan_is_air_and_centre_outside_fails():
    volume = linear_volume(np.eye(3))
    edge_x = volume.affine[0, 3] + 0.35  # a few tenths of a mm inside the first column
    patch = extract_patch(volume, [edge_x, 0.0, 0.0], size_mm=10)
    assert np.all(patch[:4] == -1000.0)
    assert np.all(patch[6:] != -1000.0)
    with pytest.raises(ValueError, match=r"vol: nodule centre \[500.0, 0.0, 0.0\] mm is outside the volume"):
        extract_patch(volume, [500.0, 0.0, 0.0])


def test_views_are_the_central_planes_with_neighbours():
    s = 8
    x, y, z = np.meshgrid(np.arange(s), np.arange(s), np.arange(s), indexing="ij")
    cube = torch.as_tensor(10000.0 * x + 100.0 * y + z)[None]
    views = views_25d(cube, ("axial", "coronal", "sagittal"), offset=2)
    assert views.shape == (3, 3, s, s)
    c, row, col = 0, 1, 5
    assert views[0, c, row, col] == cube[0, col, row, 4 - 2]  # axial: [y, x] at z = 4 - 2
    assert views[1, 2, row, col] == cube[0, col, 4 + 2, s - 1 - row]  # coronal: [z (head up), x]
    assert views[2, 1, row, col] == cube[0, 4, col, s - 1 - row]  # sagittal: [z (head up), y]


def test_projection_views_hold_the_centre_plane_mean_and_maximum():
    s = 8
    rng = np.random.default_rng(0)
    cube = torch.as_tensor(rng.uniform(size=(s, s, s)), dtype=torch.float32)[None]
    views = views_25d(cube, ("axial", "coronal", "sagittal"), channels="projections")
    assert views.shape == (3, 3, s, s)
    row, col = 2, 6
    # axial [y, x]: along z; coronal [z (head up), x]: along y; sagittal [z (head up), y]: along x
    assert views[0, 0, row, col] == cube[0, col, row, s // 2]
    assert torch.isclose(views[0, 1, row, col], cube[0, col, row, :].mean())
    assert views[0, 2, row, col] == cube[0, col, row, :].max()
    assert torch.isclose(views[1, 1, row, col], cube[0, col, :, s - 1 - row].mean())
    assert views[2, 2, row, col] == cube[0, :, col, s - 1 - row].max()
    # a nodule twice as thick along z doubles the axial mean projection's sum, while the centre plane is unchanged
    thin, thick = torch.zeros(1, s, s, s), torch.zeros(1, s, s, s)
    thin[0, 3:5, 3:5, 4] = 1.0
    thick[0, 3:5, 3:5, 3:5] = 1.0
    a, b = views_25d(thin, ("axial",), channels="projections"), views_25d(thick, ("axial",), channels="projections")
    assert torch.equal(a[0, 0], b[0, 0]) and torch.isclose(b[0, 1].sum(), 2 * a[0, 1].sum())
    with pytest.raises(ValueError, match="channels must be one of"):
        views_25d(cube, channels="mip")
    with pytest.raises(ValueError, match="channels must be one of"):
        Views25Dd("image", channels="slab")


def _written_series(tmp_path):
    volume = linear_volume(np.eye(3), spacing=(0.75, 0.75, 2.0), shape=(60, 60, 24))
    volume.hu = np.clip(volume.hu * 4 - 400, -1024, 1000)  # spread over the window, stays integer-exact
    volume.hu = np.round(volume.hu)
    write_ct_series(volume, tmp_path / "series")
    return volume


def test_pipeline_windows_and_normalises_from_dicom(tmp_path):
    volume = _written_series(tmp_path)
    record = {"volume": str(tmp_path / "series"), "center_mm": [0.0, 0.0, 0.0], "label": [1.0], "id": "n1"}
    cached = nodule_preprocess(size_mm=20, spacing_mm=1.0)(record)
    assert cached["image"].dtype == torch.float16 and cached["image"].shape == (1, 20, 20, 20)
    assert set(cached) == {"image", "label", "id"}
    sample = nodule_postprocess(augmentation=None)(cached)
    assert sample["image"].shape == (3, 3, 20, 20) and sample["image"].dtype == torch.float32
    # axial view, middle channel, pixel (row 10, column 10) = patch voxel (10, 10, 10)
    world = np.array([0.5, 0.5, 0.5])
    hu = extract_patch(volume, [0.0, 0.0, 0.0], 20)[10, 10, 10]
    assert hu == pytest.approx(np.clip(world @ GRADIENT * 4 - 400, -1024, 1000), abs=2.0)
    windowed = np.clip((hu + 1000) / 1400, 0, 1)
    expected = (windowed - IMAGENET_MEAN[1]) / IMAGENET_STD[1]
    assert sample["image"][0, 1, 10, 10].item() == pytest.approx(expected, abs=2e-3)
    assert sample["label"].tolist() == [1.0]


def test_augmentation_is_3d_and_comes_before_the_views():
    cube = np.random.default_rng(0).uniform(size=(1, 12, 12, 12)).astype(np.float16)
    flip_all = CTAugmentation(flip=True, rotate90=False, rotate_degrees=0, scale=0, translate_mm=0, noise_std=0,
                              prob=1.0)
    augmented = nodule_postprocess(flip_all)({"image": cube, "label": torch.ones(1), "id": "x"})["image"]
    plain = nodule_postprocess(None)({"image": cube[:, ::-1, ::-1, ::-1].copy(), "label": torch.ones(1), "id": "x"})
    # flipping the cube along x, y and z, then cutting views == cutting views of the flipped cube
    torch.testing.assert_close(augmented, plain["image"])
    # the neighbouring planes swapped: channel 0 of the axial view is now the plane above the centre
    unflipped = nodule_postprocess(None)({"image": cube, "label": torch.ones(1), "id": "x"})["image"]
    assert not torch.allclose(augmented, unflipped)


def test_random_augmentation_changes_views_but_keeps_shape_and_range():
    cube = np.zeros((1, 16, 16, 16), dtype=np.float16)
    cube[:, 4:10, 6:12, 5:9] = 1.0
    post = nodule_postprocess(CTAugmentation(prob=1.0))
    post.set_random_state(seed=1)
    first = post({"image": cube, "label": torch.zeros(1), "id": "a"})["image"]
    second = post({"image": cube, "label": torch.zeros(1), "id": "a"})["image"]
    assert first.shape == second.shape == (3, 3, 16, 16)
    assert not torch.allclose(first, second)
    low = (0 - max(IMAGENET_MEAN)) / min(IMAGENET_STD)
    assert first.min() > low - 1.0  # noise std 0.02 on [0, 1] stays near the window
