from __future__ import annotations

import pytest

from ldoctor.datasets.lidc import tumor_task
from ldoctor.datasets.mimic import drug_task
from ldoctor.datasets.nih import CHESTXRAY14_FINDINGS, disease_task
from ldoctor.tasks import TASK_KINDS, TaskSpec, validate_tasks


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_every_kind_builds(kind):
    n = 1 if kind == "binary" else 3
    spec = TaskSpec(name="t", kind=kind, num_outputs=n)
    assert spec.class_names == [f"class_{i}" for i in range(n)]


def test_any_identifier_is_an_input_key():
    assert TaskSpec(name="t", kind="binary", num_outputs=1, input_key="signal").input_key == "signal"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "regression", "num_outputs": 1}, "kind"),
        ({"kind": "multilabel", "num_outputs": 0}, "num_outputs"),
        ({"kind": "binary", "num_outputs": 2}, "num_outputs"),
        ({"kind": "multiclass", "num_outputs": 1}, "num_outputs"),
        ({"kind": "multilabel", "num_outputs": 2, "class_names": ["a"]}, "class_names"),
        ({"kind": "multilabel", "num_outputs": 2, "class_names": ["a", "a"]}, "class_names"),
        ({"kind": "multilabel", "num_outputs": 2, "input_key": "two words"}, "input_key"),
        ({"kind": "multilabel", "num_outputs": 2, "input_key": ""}, "input_key"),
    ],
)
def test_invalid_spec_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"TaskSpec\.{field}"):
        TaskSpec(name="t", **kwargs)


def test_duplicate_task_names_rejected():
    with pytest.raises(ValueError, match=r"TaskSpec\.name 'tumor' appears twice"):
        validate_tasks([tumor_task(), tumor_task()])
    with pytest.raises(ValueError, match="empty"):
        validate_tasks([])


def test_default_specs():
    tumor, disease = tumor_task(), disease_task()
    assert (tumor.kind, tumor.num_outputs, tumor.class_names) == ("binary", 1, ["malignant"])
    assert disease.kind == "multilabel" and disease.num_outputs == 14
    assert disease.class_names[0] == "Atelectasis" and disease.class_names[-1] == "Hernia"
    assert "No Finding" not in CHESTXRAY14_FINDINGS and len(set(CHESTXRAY14_FINDINGS)) == 14
    drug = drug_task(["A02B", "B01A", "C07A"], ["D:4019", "P:3893"])
    assert (drug.num_outputs, drug.input_key, drug.code_vocabulary) == (3, "codes", ["D:4019", "P:3893"])
    assert validate_tasks([tumor, disease, drug]).keys() == {"tumor", "disease", "drug"}
