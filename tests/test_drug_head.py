"""The drug head's wide (bag-of-codes) and copy (earlier drugs) paths, and the prior-bias initialisation."""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import pytest
import torch

from datamodules.mimic import MIMICDrugDataModule
from ldoctor.datasets.lidc import tumor_task
from ldoctor.datasets.mimic import drug_task
from ldoctor.losses import EqualWeighting
from ldoctor.models.heads.drug import DrugHead, DrugReadout, medication_code_map
from ldoctor.module import MultiTaskModule
from tests.fixtures.mimic import write_synthetic_mimic
from tests.helpers import tiny_trainer_kwargs

pytestmark = pytest.mark.filterwarnings("ignore:.*prescription rows with an NDC.*")

DRUGS = ["A01", "B02", "C03"]
# index 1..6 in the codes tensor; M:Z99 is a drug outside the label space and must copy to nothing
CODES = ["<unk>", "D:1", "P:2", "M:B02", "M:C03", "M:Z99"]
TASK = drug_task(DRUGS, CODES)
# patient 0: one admission; patient 1: 3 admissions (oldest gave C03 and Z99, previous gave B02)
BATCH_CODES = torch.tensor(
    [
        [[2, 3, 0], [0, 0, 0], [0, 0, 0]],
        [[2, 5, 6], [3, 4, 0], [2, 2, 0]],
    ]
)


def zero_head(**kwargs) -> DrugReadout:
    head = DrugReadout(4, CODES, DRUGS, dropout=0.0, **kwargs).eval()
    with torch.no_grad():
        head.linear.weight.zero_()
        head.linear.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    return head


def test_medication_code_map_links_m_codes_to_their_drug():
    m = medication_code_map(CODES, DRUGS)
    assert m.shape == (7, 3)
    assert m.nonzero().tolist() == [[4, 1], [5, 2]]  # index 4 = M:B02 -> B02, 5 = M:C03 -> C03; M:Z99 nowhere


def test_copy_path_adds_exactly_the_gate_of_earlier_drugs():
    head = zero_head(copy="last")
    with torch.no_grad():
        head.copy_gate.copy_(torch.tensor([0.3, 1.7, -0.4]))
        head.copy_gate_shared.fill_(0.25)
    logits = head(torch.randn(2, 4), BATCH_CODES)
    bias = torch.tensor([0.5, -1.0, 2.0])
    assert torch.allclose(logits[0], bias)  # a first admission copies nothing
    # patient 1's previous admission (row 1) gave B02: its logit rises by exactly gate_B02 + shared; C03 (only in
    # the oldest admission) does not count for copy="last"
    assert torch.allclose(logits[1], bias + torch.tensor([0.0, 1.7 + 0.25, 0.0]))
    head.copy_mode = "all"
    logits = head(torch.randn(2, 4), BATCH_CODES)
    assert torch.allclose(logits[1], bias + torch.tensor([0.0, 1.95, -0.4 + 0.25]))
    assert head.previous_drugs(BATCH_CODES).tolist() == [[0, 0, 0], [0, 1, 1]]


def test_mixture_copy_mixes_probabilities_for_readmissions_only():
    head = zero_head(copy="last", copy_combine="mixture")
    with torch.no_grad():
        head.copy_gate.copy_(torch.tensor([0.3, 1.7, -0.4]))
        head.copy_gate_shared.fill_(0.25)
    logits = head(torch.randn(2, 4), BATCH_CODES)
    bias = torch.tensor([0.5, -1.0, 2.0])
    assert torch.equal(logits[0], bias)  # a first admission has nothing to copy: logits exactly unchanged
    # patient 1 (previous admission gave B02): p = (1 - g_d) sigmoid(bias) + g_d [d == B02], g_d = sigmoid(gate)
    share = torch.sigmoid(torch.tensor([0.3, 1.7, -0.4]) + 0.25)
    expected = (1 - share) * torch.sigmoid(bias) + share * torch.tensor([0.0, 1.0, 0.0])
    assert torch.allclose(torch.sigmoid(logits[1]), expected, atol=1e-5)
    assert torch.sigmoid(logits[1, 1]) > torch.sigmoid(bias[1])  # the copied drug rises...
    assert (torch.sigmoid(logits[1, [0, 2]]) < torch.sigmoid(bias[[0, 2]])).all()  # ...the others fall
    # the gate starts where (1 - g) q + g = p: B02 repeated (p -> 0.99), q = sigmoid(-1.0)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    gate = head.init_copy_gate([{"codes": BATCH_CODES, "label": labels}])
    q = 1 / (1 + math.exp(1.0))
    share = min((0.99 - q) / (1 - q), 0.99)
    assert gate == pytest.approx(math.log(share / (1 - share)))
    with pytest.raises(ValueError, match="copy_combine"):
        DrugReadout(4, CODES, DRUGS, copy="last", copy_combine="sum")


def test_wide_path_is_a_linear_map_of_the_multi_hot_codes():
    head = zero_head(wide="all")
    weight = torch.arange(18, dtype=torch.float).view(3, 6) / 10  # [D, V]: column c - 1 for code index c
    with torch.no_grad():
        head.wide.weight.copy_(weight)
    logits = head(torch.zeros(2, 4), BATCH_CODES)
    bias = torch.tensor([0.5, -1.0, 2.0])
    # patient 0: codes {2, 3}; patient 1, every admission: {2, 3, 4, 5, 6} (code 2 twice counts once)
    expected0 = bias + weight[:, 1] + weight[:, 2]
    expected1 = bias + weight[:, 1:6].sum(dim=1)
    assert torch.allclose(logits, torch.stack([expected0, expected1]))
    head.wide_mode = "current"  # patient 1's current admission is row 2: code 2 only
    logits = head(torch.zeros(2, 4), BATCH_CODES)
    assert torch.allclose(logits, torch.stack([expected0, bias + weight[:, 1]]))


def test_deep_path_is_the_linear_read_out_and_gradients_reach_every_path():
    head = DrugReadout(4, CODES, DRUGS, dropout=0.0, wide="all", copy="last")
    features = torch.randn(2, 4)
    logits = head(features, BATCH_CODES)
    assert torch.allclose(logits, head.linear(features))  # wide weights and gates start at zero
    logits.sum().backward()
    assert head.wide.weight.grad.abs().sum() > 0 and head.copy_gate.grad[1] == 1.0
    # the shared gate is a buffer set from the training data (init_copy_gate), not an optimised parameter
    assert "copy_gate_shared" in dict(head.named_buffers())
    assert all(p is not head.copy_gate_shared for p in head.parameters())


def test_head_options_are_checked():
    with pytest.raises(ValueError, match="wide must be"):
        DrugReadout(4, CODES, DRUGS, wide="bag")
    with pytest.raises(ValueError, match="history_drugs=True"):
        DrugReadout(4, ["<unk>", "D:1"], DRUGS, copy="last")
    with pytest.raises(ValueError, match="DrugHead needs a multilabel task with a code_vocabulary"):
        DrugHead(tumor_task(), 4)


def test_drug_head_joins_history_and_image_and_adds_the_copy_gate():
    head = DrugHead(TASK, in_features=6, hidden_dim=8, dropout=0.0, history_dropout=0.0, wide="current",
                    copy="last").eval()
    assert head.readout.linear.in_features == 16  # history + image (or "no image")
    encode = torch.nn.Linear(12, 6)  # stands in for the trunk: [B, 12] "images" -> [B, 6] features
    batch = {"codes": BATCH_CODES}
    features = head.features(batch, encode)
    assert torch.equal(features[:, 8:], head.no_image.expand(2, 8))  # no image: the learned vector
    with torch.no_grad():
        head.readout.copy_gate.fill_(2.0)
    expected = head.readout.linear(features) + torch.tensor([[0.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    assert torch.allclose(head(batch, encode), expected)
    images = torch.randn(2, 12)
    with_image = head.features({**batch, "image": images, "has_image": torch.tensor([True, False])}, encode)
    with torch.no_grad():
        assert torch.allclose(with_image[0, 8:], head.image_fusion(encode(images[:1]))[0])
    assert torch.equal(with_image[1, 8:], head.no_image)  # the row without an image keeps the vector


def test_prior_bias_is_the_training_log_odds(tmp_path):
    truth = write_synthetic_mimic(tmp_path / "mimic", n_patients=24, max_admissions=2, seed=3)
    dm = MIMICDrugDataModule(mimic_dir=str(truth.folder), ndc_map=str(truth.ndc_map), batch_size=8)
    head = partial(DrugHead, hidden_dim=8, wide="all", copy="last", prior_bias=True)
    model = MultiTaskModule(dm.tasks, heads={"drug": head}, trunk="resnet18", weighting=EqualWeighting,
                            optimizer=partial(torch.optim.SGD, lr=0.0))
    trainer = L.Trainer(**tiny_trainer_kwargs(tmp_path, max_steps=1, limit_val_batches=0))
    trainer.fit(model, datamodule=dm)
    labels = dm.train_dataset.labels
    expected = []
    for d in range(labels.shape[1]):  # independent: count positives per drug, then the clipped log-odds
        p = min(max(sum(float(v) for v in labels[:, d]) / len(labels), 0.01), 0.99)
        expected.append(math.log(p / (1 - p)))
    head = model.net.heads["drug"].readout
    assert head.linear.bias.tolist() == pytest.approx(expected, abs=1e-5)
    # the shared copy gate starts from the same bias (lr 0 keeps both at their initial values)
    loader = torch.utils.data.DataLoader(dm.train_dataset, batch_size=64, collate_fn=dm.collate_fn)
    gate = float(head.copy_gate_shared)
    assert gate != 0.0
    assert head.init_copy_gate(loader) == pytest.approx(gate, abs=1e-5)
    assert torch.equal(dm.train_labels(), labels)


def test_heads_name_known_tasks_and_data_init_needs_the_data_contract(tmp_path):
    with pytest.raises(ValueError, match="heads/task_losses/metrics name unknown task 'tumor'"):
        MultiTaskModule([TASK], heads={"tumor": DrugHead}, trunk="resnet18")
    model = MultiTaskModule([TASK], heads={"drug": partial(DrugHead, hidden_dim=8, prior_bias=True)},
                            trunk="resnet18")

    class NotLDoctor(L.LightningDataModule):
        def train_dataloader(self):
            return []

    with pytest.raises(TypeError, match="DataModule derived from ldoctor.datamodule.LDoctorDataModule"):
        L.Trainer(**tiny_trainer_kwargs(tmp_path, max_steps=1)).fit(model, datamodule=NotLDoctor())


def test_copy_gate_starts_at_the_training_repeat_rate():
    head = zero_head(copy="last")  # bias [0.5, -1.0, 2.0]
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    # only patient 1 has an earlier drug (B02, bias -1.0), and it is prescribed again: rate 1 -> clipped 0.99
    gate = head.init_copy_gate([{"codes": BATCH_CODES, "label": labels}])
    assert gate == pytest.approx(math.log(0.99 / 0.01) + 1.0)
    assert float(head.copy_gate_shared) == pytest.approx(gate)
    head.copy_mode = "all"  # B02 (repeated, bias -1.0) and C03 (not repeated, bias 2.0): rate 1/2
    labels[1, 2] = float("nan")  # an unknown label leaves its pair out: rate 1/1 again, bias -1.0
    assert head.init_copy_gate([{"codes": BATCH_CODES, "label": labels}]) == pytest.approx(math.log(99) + 1.0)
    labels[1, 2] = 0.0
    assert head.init_copy_gate([{"codes": BATCH_CODES[:1], "label": labels[:1]},
                                {"codes": BATCH_CODES[1:], "label": labels[1:]}]) == pytest.approx(0.0 - 0.5)
    assert head.init_copy_gate([{"codes": BATCH_CODES[:1], "label": labels[:1]}]) is None
