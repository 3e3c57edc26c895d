"""The declared seams: the data contract, default heads, injected factories as config, the one bad-input
collector, the one preprocessing cache and the label statistics the hooks read."""

from __future__ import annotations

import functools
import logging
import math

import numpy as np
import pytest
import torch
from monai.transforms import Lambda
from torch import nn

from datamodules.multitask import MultiTaskDataModule
from datamodules.synthetic import SyntheticDiseaseDataModule, SyntheticTumorDataModule
from ldoctor.config import factory_config
from ldoctor.datasets.lidc import tumor_task
from ldoctor.errors import BadInput, BadInputLog
from ldoctor.labels import label_rates
from ldoctor.losses import EqualWeighting
from ldoctor.models.heads import ClassificationHead, build_heads, default_head
from ldoctor.tasks import TaskSpec
from ldoctor.transforms.cache import cached_dataset, check_cache


def test_members_are_found_through_the_contract_only():
    tumor, disease = SyntheticTumorDataModule(), SyntheticDiseaseDataModule()
    assert tumor.member("tumor") is tumor and tumor.task_names == ["tumor"]
    with pytest.raises(KeyError, match="serves task 'tumor', not 'disease'"):
        tumor.member("disease")
    data = MultiTaskDataModule({"tumor": tumor, "disease": disease})
    assert data.member("disease") is disease and data.task_names == ["tumor", "disease"]
    with pytest.raises(KeyError, match="not 'drug'"):
        data.member("drug")
    assert tumor.feature_names == []  # the default: batches carry no side features


def test_default_heads_by_input_and_heads_must_be_task_heads():
    assert default_head(tumor_task()) is ClassificationHead
    signal = TaskSpec(name="ecg", kind="binary", num_outputs=1, input_key="signal")
    with pytest.raises(ValueError, match=r"'signal', which has no default head .* model.heads.ecg"):
        default_head(signal)
    with pytest.raises(TypeError, match="heads derive from ldoctor.models.heads.TaskHead"):
        build_heads({"ecg": signal}, {"ecg": lambda task, width: nn.Linear(width, 1)}, 8)


class _Local:
    pass


def test_factories_become_config_when_they_can():
    assert factory_config(EqualWeighting) == {"class_path": "ldoctor.losses.weighting.equal.EqualWeighting"}
    partial = functools.partial(ClassificationHead, dropout=0.3)
    assert factory_config({"tumor": partial}) == {
        "tumor": {"class_path": "ldoctor.models.heads.classification.ClassificationHead", "init_args": {"dropout": 0.3}}}
    assert factory_config({"a": 1, "b": [None, "x"]}) == {"a": 1, "b": [None, "x"]}  # plain data as it is
    assert factory_config(lambda: None) is None
    assert factory_config(functools.partial(ClassificationHead, nn.Identity())) is None  # a positional object
    assert factory_config({"x": _Local, "y": lambda: None}) is None  # one undescribable value spoils the dict


def test_bad_input_raises_once_or_counts_everything(caplog):
    strict = BadInputLog()
    with pytest.raises(BadInput, match=r"a.csv line 2: bad \(and 2 more\); set skip_bad=True"):
        strict.report_all("rows", ["a.csv line 2: bad", "a.csv line 3: bad", "a.csv line 4: bad"])
    with pytest.raises(FileNotFoundError, match="x.png"):
        strict.report("missing", "x.png: not found", FileNotFoundError)
    lenient = BadInputLog(skip_bad=True, source="table")
    with caplog.at_level(logging.WARNING, logger="ldoctor.errors"):
        lenient.report_all("rows", [f"a.csv line {i}: bad" for i in range(8)])
        lenient.report("missing", "x.png: not found")
    assert lenient.counts == {"rows": 8, "missing": 1}
    assert caplog.text.count("skipped rows") == 5  # the first five of a kind are logged, all are counted
    with pytest.warns(UserWarning, match=r"table: skipped bad input \(skip_bad=True\): \{'rows': 8, 'missing': 1\}"):
        lenient.summary()


def test_one_cache_setting_memory_disk_none(tmp_path):
    calls = []

    def expensive(d: dict) -> dict:
        calls.append(d["id"])
        return {**d, "image": torch.full((1, 2, 2), float(d["value"]))}

    pre, post = Lambda(expensive), Lambda(lambda d: {**d, "image": d["image"] + 1})
    records = [{"id": f"r{i}", "value": i, "label": [0.0]} for i in range(3)]
    memory: dict = {}
    first = cached_dataset(records, pre, post, "memory", memory=memory)
    relabelled = cached_dataset([{**records[0], "label": [0.25]}], pre, post, "memory", memory=memory)
    assert calls == ["r0", "r1", "r2"]  # preprocessed once, shared by the second dataset
    assert float(first[2]["image"][0, 0, 0]) == 3.0 and relabelled[0]["label"].tolist() == [0.25]
    disk = cached_dataset(records, pre, post, "disk", tmp_path / "cache")
    for _ in range(2):  # two epochs: the second reads the .pt files
        for i in range(3):
            disk[i]
    assert calls.count("r1") == 2 and len(list((tmp_path / "cache").glob("*.pt"))) == 3
    none = cached_dataset(records, pre, post, "none")
    for _ in range(2):
        none[0]
    assert calls.count("r0") == 4
    with pytest.raises(ValueError, match="cache must be one of"):
        check_cache("ram", None, tmp_path)
    with pytest.raises(ValueError, match="needs cache_dir"):
        check_cache("disk", None, tmp_path)
    with pytest.raises(ValueError, match="lies inside the data folder"):
        check_cache("disk", tmp_path / "data" / "cache", tmp_path / "data")
    assert check_cache("none", None, tmp_path) is None


def test_label_rates_by_kind_with_unknown_labels():
    assert label_rates(np.array([[1.0, 0.0], [0.0, np.nan], [1.0, np.nan]]), "multilabel", 2).tolist() == \
        pytest.approx([2 / 3, 0.0])
    assert label_rates(np.array([2.0, 0.0, 2.0, np.nan]), "multiclass", 3).tolist() == pytest.approx([1 / 3, 0, 2 / 3])
    unknown = label_rates(np.array([[math.nan]]), "binary", 1)
    assert unknown.tolist() == [0.5]  # nothing known: the uninformative prior
