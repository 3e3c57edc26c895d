"""MIMICDrugDataModule: batches on the real demo, images, checkpointed vocabularies, and a learnable signal."""

from __future__ import annotations

from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.mimic import MIMICDrugDataModule, collate_drug_batch
from ldoctor.losses import EqualWeighting
from ldoctor.losses.drug import DrugLoss
from ldoctor.metrics import DrugMetrics
from ldoctor.models.heads import DrugHead
from ldoctor.module import MultiTaskModule
from tests.fixtures.mimic import write_synthetic_mimic
from tests.helpers import tiny_trainer_kwargs

pytestmark = pytest.mark.filterwarnings("ignore:.*prescription rows with an NDC.*")


@pytest.fixture(scope="module")
def demo_dm():
    dm = MIMICDrugDataModule(batch_size=8)
    dm.setup("fit")
    return dm


def _decode(codes: torch.Tensor, vocabulary: list[str]) -> list[list[str]]:
    return [[vocabulary[i - 1] for i in row.tolist() if i] for row in codes if row.any()]


def test_demo_task_and_split(demo_dm):
    task = demo_dm.task
    assert task.name == "drug" and task.input_key == "codes" and task.num_outputs == 106
    assert task.code_vocabulary[0] == "<unk>"
    assert (demo_dm.stats.patients, demo_dm.stats.admissions) == (82, 107)
    subjects = {name: {r["subject_id"] for r in records} for name, records in demo_dm.splits.items()}
    assert (len(subjects["train"]), len(subjects["test"]), len(subjects["val"])) == (54, 14, 14)
    assert subjects["train"].isdisjoint(subjects["test"] | subjects["val"])
    train_codes = {c for r in demo_dm.splits["train"] for c in ("D:" + d for d in r["diagnoses"])}
    assert train_codes <= set(task.code_vocabulary)  # the vocabulary comes from the training patients


def test_demo_batch_decodes_to_the_records(demo_dm):
    samples = [demo_dm.train_dataset[i] for i in range(len(demo_dm.train_dataset))]
    multi = next(i for i, s in enumerate(samples) if s["codes"].shape[0] >= 2)
    batch = collate_drug_batch([samples[0], samples[multi]])
    assert batch["codes"].dtype == torch.int64 and batch["codes"].shape[0] == 2
    assert batch["codes"].shape[1] == samples[multi]["codes"].shape[0]
    assert not batch["codes"][0, 1:].any()  # a first admission: later admission rows are padding
    by_id = {f"{r['subject_id']}/{r['hadm_id']}": r for r in demo_dm.splits["train"]}
    for row, sample_id in enumerate(batch["id"]):
        record = by_id[sample_id]
        current = _decode(batch["codes"][row], demo_dm.code_vocabulary)[-1]
        assert current == ["D:" + c for c in record["diagnoses"]] + ["P:" + c for c in record["procedures"]]
        drugs = {demo_dm.drug_vocabulary[i] for i in batch["label"][row].nonzero().flatten().tolist()}
        assert drugs == set(record["drugs"])
    earlier = _decode(batch["codes"][1], demo_dm.code_vocabulary)[0]
    assert any(c.startswith("M:") for c in earlier)  # the earlier admission shows its drugs


def test_unseen_codes_map_to_unknown(demo_dm):
    assert demo_dm.test_dataset.unknown_codes > 0
    unknown_rows = [s["codes"] for s in (demo_dm.test_dataset[i] for i in range(len(demo_dm.test_dataset)))]
    assert any((c == 1).any() for c in unknown_rows)  # index 1 = "<unk>"


def test_checkpoint_carries_vocabularies(demo_dm, tmp_path):
    model = MultiTaskModule(demo_dm.tasks, trunk="resnet18", weighting=EqualWeighting,
                            task_losses={"drug": DrugLoss}, metrics={"drug": DrugMetrics})
    trainer = L.Trainer(**tiny_trainer_kwargs(tmp_path, limit_train_batches=1, limit_val_batches=1))
    trainer.fit(model, datamodule=demo_dm)
    trainer.save_checkpoint(tmp_path / "drug.ckpt")
    checkpoint = torch.load(tmp_path / "drug.ckpt", weights_only=False)
    (spec,) = checkpoint["hyper_parameters"]["tasks"]
    assert spec["code_vocabulary"] == demo_dm.code_vocabulary
    assert spec["class_names"] == demo_dm.drug_vocabulary
    assert checkpoint["MIMICDrugDataModule"]["drug_vocabulary"] == demo_dm.drug_vocabulary
    restored = MultiTaskModule.load_from_checkpoint(tmp_path / "drug.ckpt", weighting=EqualWeighting)
    assert restored.task_specs["drug"].code_vocabulary == demo_dm.code_vocabulary


def test_images_linked_to_admissions(tmp_path, demo_dm):
    hadm = demo_dm.splits["train"][0]["hadm_id"]
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))).save(tmp_path / "cxr.png")
    (tmp_path / "links.csv").write_text(f"hadm_id,image_path\n{hadm},cxr.png\n")
    dm = MIMICDrugDataModule(images=str(tmp_path / "links.csv"), image_size=32, batch_size=4)
    dm.setup("fit")
    row = next(i for i, h in enumerate(dm.train_dataset.hadm_ids) if h == hadm)
    other = (row + 1) % len(dm.train_dataset)
    batch = collate_drug_batch([dm.train_dataset[row], dm.train_dataset[other]])
    assert batch["image"].shape == (2, 3, 32, 32) and batch["has_image"].tolist() == [True, False]
    assert batch["image"][0].std() > 0.1 and not batch["image"][1].any()
    model = MultiTaskModule(dm.tasks, trunk="resnet18", weighting=EqualWeighting)
    # training mode with a single linked image in the batch: every row goes through the trunk, so BatchNorm
    # never sees a batch of one
    assert model.training and model.net.forward_task("drug", batch).shape == (2, 106)
    model.eval()  # no dropout: the rows can be compared
    logits = model.net.forward_task("drug", batch)
    assert logits.shape == (2, 106)
    no_image = model.net.forward_task("drug", {**batch, "has_image": torch.tensor([False, False])})
    assert torch.allclose(no_image[1], logits[1]) and not torch.allclose(no_image[0], logits[0])
    (tmp_path / "links.csv").write_text(f"hadm_id,image_path\n{hadm},missing.png\n")
    with pytest.raises(FileNotFoundError, match=r"missing\.png: listed in .*links\.csv line 2, not found"):
        MIMICDrugDataModule(images=str(tmp_path / "links.csv")).setup("fit")


def test_bad_arguments_fail_early(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        MIMICDrugDataModule(mimic_dir=str(tmp_path), records=str(tmp_path / "r.json"))
    write_synthetic_mimic(tmp_path, n_patients=4, max_admissions=1)
    dm = MIMICDrugDataModule(mimic_dir=str(tmp_path), ndc_map=str(tmp_path / "ndc_to_atc3.csv"), min_admissions=3)
    with pytest.raises(ValueError, match="no admission left after filtering"):
        dm.task  # noqa: B018 (the CLI reads it at instantiation: the error comes before training)


def test_model_learns_the_synthetic_diagnosis_to_drug_structure(tmp_path):
    truth = write_synthetic_mimic(tmp_path, n_patients=100, max_admissions=2, n_diagnoses=10, seed=1)
    dm = MIMICDrugDataModule(mimic_dir=str(tmp_path), ndc_map=str(truth.ndc_map), batch_size=16)
    dm.setup("fit")
    L.seed_everything(0, verbose=False)
    model = MultiTaskModule(dm.tasks, heads={"drug": partial(DrugHead, dropout=0.0, hidden_dim=64)}, trunk="resnet18",
                            weighting=EqualWeighting, task_losses={"drug": DrugLoss}, metrics={"drug": DrugMetrics},
                            optimizer=partial(torch.optim.AdamW, lr=1e-2))
    trainer = L.Trainer(**tiny_trainer_kwargs(tmp_path, max_epochs=8, limit_val_batches=0,
                                              num_sanity_val_steps=0))
    metrics = DrugMetrics(dm.task)
    model.eval()
    with torch.no_grad():
        for batch in dm.test_dataloader():
            metrics.update(torch.sigmoid(model.net.forward_task("drug", batch)), batch["label"].long())
    before = float(metrics.compute()["jaccard"])
    model.train()
    trainer.fit(model, datamodule=dm)
    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    assert result["test/drug/jaccard"] > 0.8 > before + 0.4
    assert result["test/drug/prauc"] > 0.9


def test_mimic_drug_config_trains_on_the_shipped_demo(tmp_path):
    from ldoctor.cli import LDoctorCLI

    cli = LDoctorCLI(args=["fit", "--config", "configs/mimic_drug.yaml", f"--trainer.default_root_dir={tmp_path}",
                           "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
                           "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    assert isinstance(cli.datamodule, MIMICDrugDataModule)
    assert cli.model.task_specs["drug"].code_vocabulary == cli.datamodule.code_vocabulary
    assert isinstance(cli.model.task_losses["drug"], DrugLoss)
    logged = cli.trainer.callback_metrics
    assert {"val/drug/jaccard", "val/drug/prauc", "val/drug/f1", "val/drug/avg_drugs"} <= set(logged)
    assert 0.0 <= float(logged["val/drug/jaccard"]) <= 1.0


def test_checkpoint_vocabularies_re_encode_other_data(demo_dm):
    other = MIMICDrugDataModule(split_seed=1, batch_size=8)
    other.setup("fit")
    assert other.code_vocabulary != demo_dm.code_vocabulary
    with pytest.warns(UserWarning, match="re-encoding the datasets with the checkpoint's"):
        other.load_state_dict(demo_dm.state_dict())
    assert other.code_vocabulary == demo_dm.code_vocabulary and other.task.num_outputs == 106
    sample = other.train_dataset[0]
    record = next(r for r in other.splits["train"] if f"{r['subject_id']}/{r['hadm_id']}" == sample["id"])
    current = _decode(sample["codes"], demo_dm.code_vocabulary)[-1]
    expected = ["D:" + c for c in record["diagnoses"]] + ["P:" + c for c in record["procedures"]]
    assert current == [c if c in demo_dm.code_vocabulary else "<unk>" for c in expected]
