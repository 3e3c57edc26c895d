"""Radiomic features measured on the HU cube, the running standardiser and the head's side path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ldoctor.datasets.lidc import tumor_task
from ldoctor.models.heads import ClassificationHead, RunningStandardiser
from ldoctor.transforms.radiomics import RADIOMIC_FEATURES, SOLID_HU, nodule_radiomics

LUNG_HU = -850.0


def lung(size: int = 32, seed: int = 0, noise_hu: float = 20.0) -> np.ndarray:
    return (LUNG_HU + np.random.default_rng(seed).normal(0.0, noise_hu, (size,) * 3)).astype(np.float32)


def ball(size: int, radius_mm: float, spacing_mm: float = 1.0, center=None) -> np.ndarray:
    c = (size - 1) / 2.0 if center is None else np.asarray(center, dtype=float)[:, None, None, None]
    grids = np.stack(np.meshgrid(*(np.arange(size),) * 3, indexing="ij")).astype(float)
    return (((grids - c) * spacing_mm) ** 2).sum(0) <= radius_mm**2


def features(hu: np.ndarray, spacing_mm: float = 1.0) -> dict[str, float]:
    return dict(zip(RADIOMIC_FEATURES, nodule_radiomics(hu, spacing_mm).tolist()))


def size_of(f: dict[str, float], name: str) -> float:
    return math.expm1(f[name])


@pytest.mark.parametrize("radius_mm", [2.5, 6.0, 11.0])
def test_a_solid_ball_is_measured_in_mm(radius_mm):
    hu = lung()
    hu[ball(32, radius_mm)] = 30.0
    f = features(hu)
    true_volume = 4.0 / 3.0 * math.pi * radius_mm**3
    assert size_of(f, "lesion_log_volume_mm3") == pytest.approx(true_volume, rel=0.15)
    assert size_of(f, "lesion_log_mass_mm3") == pytest.approx(true_volume, rel=0.15)
    assert size_of(f, "solid_log_volume_mm3") == pytest.approx(true_volume, rel=0.15)
    assert size_of(f, "lesion_log_extent_inplane_mm") == pytest.approx(2 * radius_mm, abs=1.5)
    assert size_of(f, "lesion_log_extent_z_mm") == pytest.approx(2 * radius_mm, abs=1.5)
    assert f["peak_hu_per_1000"] == pytest.approx(0.03, abs=0.1) and f["touches_border"] == 0.0


def test_spacing_is_honoured():
    """The same 6 mm ball sampled at 1 mm and at 0.5 mm gives the same volume and extent in mm."""
    coarse, fine = lung(32), lung(64, seed=1)
    coarse[ball(32, 6.0)] = 30.0
    fine[ball(64, 6.0, spacing_mm=0.5)] = 30.0
    a, b = features(coarse, 1.0), features(fine, 0.5)
    assert size_of(a, "lesion_log_volume_mm3") == pytest.approx(size_of(b, "lesion_log_volume_mm3"), rel=0.1)
    assert size_of(a, "lesion_log_extent_inplane_mm") == pytest.approx(size_of(b, "lesion_log_extent_inplane_mm"),
                                                                       abs=1.0)


def test_attached_vessel_is_cut_off():
    """A 2 mm-radius vessel running through the nodule to the patch border leaves the volume near the ball's."""
    alone, attached = lung(), lung()
    alone[ball(32, 5.0)] = 30.0
    attached[ball(32, 5.0)] = 30.0
    yy, zz = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    tube = (yy - 15.5) ** 2 + (zz - 18.0) ** 2 <= 2.0**2
    attached[:, tube] = 40.0
    a, b = features(alone), features(attached)
    assert size_of(b, "lesion_log_volume_mm3") == pytest.approx(size_of(a, "lesion_log_volume_mm3"), rel=0.35)
    # without the shell cut the component would run along the whole tube (> 32 mm long)
    assert size_of(b, "lesion_log_extent_inplane_mm") < 16 and b["touches_border"] == 0.0


def test_ground_glass_and_part_solid_nodules():
    """A faint ground-glass ball is cut at half its contrast; a part-solid one has a solid core of its own."""
    ggo = lung()
    ggo[ball(32, 6.0)] = -650.0
    f = features(ggo)
    assert size_of(f, "lesion_log_volume_mm3") == pytest.approx(4 / 3 * math.pi * 6.0**3, rel=0.2)
    assert size_of(f, "solid_log_volume_mm3") == 0.0  # nothing above SOLID_HU
    assert f["lesion_mean_hu_per_1000"] == pytest.approx(-0.65, abs=0.03)

    part = lung()
    part[ball(32, 8.0)] = -600.0
    part[ball(32, 3.0)] = 30.0
    g = features(part)
    assert -600.0 < SOLID_HU < 30.0
    assert size_of(g, "solid_log_volume_mm3") == pytest.approx(4 / 3 * math.pi * 27, rel=0.3)
    assert size_of(g, "lesion_log_volume_mm3") == pytest.approx(4 / 3 * math.pi * 512, rel=0.2)


def test_a_lesion_larger_than_the_patch_touches_the_border():
    hu = lung()
    hu[ball(32, 20.0)] = 30.0
    assert features(hu)["touches_border"] == 1.0


def test_bad_cube_is_refused():
    with pytest.raises(ValueError, match="finite 3D"):
        nodule_radiomics(np.zeros((4, 4)), 1.0)
    cube = lung()
    cube[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite 3D"):
        nodule_radiomics(cube, 1.0)


# ------------------------------------------------------------------------------------- standardiser, head


def test_running_standardiser_matches_numpy_over_all_batches():
    rng = np.random.default_rng(0)
    rows = rng.normal([3.0, -2.0, 100.0], [0.5, 2.0, 30.0], size=(37, 3))
    scaler = RunningStandardiser(3).train()
    for chunk in (rows[:1], rows[1:10], rows[10:], np.zeros((0, 3))):  # a batch of one and an empty one too
        scaler(torch.tensor(chunk, dtype=torch.float32))
    assert int(scaler.count) == 37
    np.testing.assert_allclose(scaler.mean.numpy(), rows.mean(0), rtol=1e-6)
    scaler.eval()
    out = scaler(torch.tensor(rows, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(out, (rows - rows.mean(0)) / rows.std(0), atol=1e-4)
    assert int(scaler.count) == 37  # evaluation leaves the statistics alone


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def test_side_path_starts_neutral_and_checks_its_input():
    torch.manual_seed(0)
    plain = ClassificationHead(tumor_task(), 8, dropout=0.0)
    side = ClassificationHead(tumor_task(["a", "b", "c"]), 8, dropout=0.0)
    side.linear.load_state_dict(plain.linear.state_dict())
    x = torch.randn(5, 8)  # the images are the features here: encode is the identity
    torch.testing.assert_close(side({"image": x, "features": torch.randn(5, 3)}, identity), plain({"image": x}, identity))
    with pytest.raises(ValueError, match=r"'features' of shape \[5, 3\], got None"):
        side({"image": x}, identity)
    with pytest.raises(ValueError, match=r"got \(5, 2\)"):
        side({"image": x, "features": torch.randn(5, 2)}, identity)
    assert side.lr_groups() == [("side_features", side.side, 10.0)] and plain.lr_groups() == []


def test_side_path_learns_a_signal_the_trunk_features_lack():
    """Trunk features are noise; the label is a logistic function of a badly scaled side feature."""
    g = torch.Generator().manual_seed(0)
    n = 512
    side = torch.randn(n, 2, generator=g) * torch.tensor([40.0, 1.0]) + torch.tensor([500.0, 0.0])
    label = (side[:, 0] - 500.0 > 0).float().unsqueeze(1)
    trunk = torch.randn(n, 16, generator=g)
    head = ClassificationHead(tumor_task(["size", "noise"]), 16, dropout=0.0)
    batch = {"image": trunk, "features": side}
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(200):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(batch, identity), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head.eval()
    accuracy = ((head(batch, identity) > 0).float() == label).float().mean()
    assert accuracy > 0.95 and head.side.weight[0, 0] > 2 * head.side.weight[0, 1].abs()
