"""SafeDrug / GAMENet processed records: explicit pickle opt-in, restricted unpickling, faithful conversion."""

from __future__ import annotations

import json
import pickle
import sys

import numpy as np
import pytest

from datamodules.mimic import MIMICDrugDataModule
from ldoctor.datasets.mimic.safedrug import import_safedrug, load_pickle, load_records_json, main
from ldoctor.ddi import load_ddi_matrix
from tests.fixtures.mimic import write_synthetic_safedrug


@pytest.fixture
def safedrug_dir(tmp_path):
    return write_synthetic_safedrug(tmp_path / "safedrug", n_patients=30, seed=2)


def test_pickles_need_the_explicit_opt_in(safedrug_dir, tmp_path):
    with pytest.raises(PermissionError, match="can run arbitrary code; pass allow_pickle=True"):
        import_safedrug(safedrug_dir / "records_final.pkl", safedrug_dir / "voc_final.pkl", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_conversion_keeps_every_visit_and_code(safedrug_dir, tmp_path):
    assert b"c__main__\nVoc\n" in (safedrug_dir / "voc_final.pkl").read_bytes()  # as SafeDrug's script writes it
    out = import_safedrug(safedrug_dir / "records_final.pkl", safedrug_dir / "voc_final.pkl", tmp_path / "out",
                          safedrug_dir / "ddi_A_final.pkl", allow_pickle=True)
    records = pickle.loads((safedrug_dir / "records_final.pkl").read_bytes())
    voc = load_pickle(safedrug_dir / "voc_final.pkl", allow_pickle=True)
    admissions, drugs = load_records_json(out)
    assert drugs == [voc["med_voc"].idx2word[i] for i in range(len(voc["med_voc"].idx2word))]
    assert len(admissions) == sum(len(p) for p in records)
    first = records[0][0]
    assert admissions[0]["subject_id"] == "0" and admissions[0]["hadm_id"] == "0_0"
    assert admissions[0]["diagnoses"] == [voc["diag_voc"].idx2word[i] for i in first[0]]
    assert admissions[0]["drugs"] == [voc["med_voc"].idx2word[i] for i in first[2]]
    adjacency = pickle.loads((safedrug_dir / "ddi_A_final.pkl").read_bytes())
    from_npz = load_ddi_matrix(tmp_path / "out" / "ddi_A.npz", drugs).numpy()
    from_csv = load_ddi_matrix(tmp_path / "out" / "ddi_pairs.csv", drugs).numpy()
    assert np.array_equal(from_npz, adjacency) and np.array_equal(from_csv, adjacency)
    json.loads(out.read_text())  # plain JSON from now on


def test_command_line_and_datamodule_on_converted_records(safedrug_dir, tmp_path):
    main(["--records", str(safedrug_dir / "records_final.pkl"), "--voc", str(safedrug_dir / "voc_final.pkl"),
          "--out", str(tmp_path / "out"), "--allow-pickle"])
    dm = MIMICDrugDataModule(records=str(tmp_path / "out" / "records.json"), split_seed=None, batch_size=4)
    dm.setup("fit")
    # SafeDrug's split in file order: first 2/3 of the patients train, next half of the rest test
    assert [r["subject_id"] for r in dm.splits["train"]][0] == "0"
    assert {r["subject_id"] for r in dm.splits["test"]} == {str(i) for i in range(20, 25)}
    batch = next(iter(dm.train_dataloader()))
    assert batch["label"].shape[1] == dm.task.num_outputs


def test_restricted_unpickler_refuses_code(tmp_path):
    class Exploit:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(pickle.UnpicklingError, match=r"global (posix|os|nt)\.system is not allowed"):
        load_pickle(tmp_path / "evil.pkl", allow_pickle=True)


def test_dill_written_vocabulary_needs_dill(tmp_path, monkeypatch):
    """SafeDrug's voc_final.pkl stores its Voc class by value through dill's helpers."""
    monkeypatch.setitem(sys.modules, "dill", None)  # as if dill were not installed
    (tmp_path / "voc.pkl").write_bytes(b"\x80\x02cdill._dill\n_create_type\nq\x00.")
    with pytest.raises(ModuleNotFoundError, match="written by dill .*pip install dill"):
        load_pickle(tmp_path / "voc.pkl", allow_pickle=True)


def test_bad_record_ids_are_reported(tmp_path):
    folder = write_synthetic_safedrug(tmp_path / "sd", n_patients=3, main_module=False)
    records = pickle.loads((folder / "records_final.pkl").read_bytes())
    records[1][0][2] = [999]
    (folder / "records_final.pkl").write_bytes(pickle.dumps(records))
    with pytest.raises(ValueError, match=r"patient 1 visit 0: drugs ids \[999\] outside the vocabulary"):
        import_safedrug(folder / "records_final.pkl", folder / "voc_final.pkl", tmp_path / "o", allow_pickle=True)
