"""SafeDrug / GAMENet processed records: explicit pickle opt-in, restricted unpickling, faithful conversion."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from datamodules.mimic import MIMICDrugDataModule
from ldoctor.datasets.mimic.safedrug import SafeDrugVoc, import_safedrug, load_pickle, load_records_json, main
from ldoctor.ddi import load_ddi_matrix
from ldoctor.errors import BadInput
from tests.fixtures.mimic import write_synthetic_safedrug

DATA = Path(__file__).parent / "data" / "safedrug"


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
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(BadInput, match=r"evil.pkl: .*global (posix|os|nt)\.system is not allowed"):
        load_pickle(tmp_path / "evil.pkl", allow_pickle=True)
    assert not marker.exists()


def _binunicode(text: str) -> bytes:
    data = text.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def test_a_dill_name_no_longer_opens_an_unrestricted_loader(tmp_path):
    """The old importer re-read any file that named a dill helper with unrestricted ``dill.loads``: a file naming
    one and then ``os.system`` ran the command. Now the same restricted unpickler reads the whole file."""
    marker = tmp_path / "pwned"
    payload = (b"\x80\x02cdill._dill\n_load_type\n" + _binunicode("type") + b"\x85R0"  # a dill name, then
               + b"cposix\nsystem\n" + _binunicode(f"touch {marker}") + b"\x85R.")  # os.system
    (tmp_path / "evil.pkl").write_bytes(payload)
    with pytest.raises(BadInput, match=r"global posix\.system is not allowed"):
        load_pickle(tmp_path / "evil.pkl", allow_pickle=True)
    assert not marker.exists()


def test_a_function_built_from_the_file_cannot_be_called(tmp_path):
    """dill stores methods as code objects; a file could build one and call it while loading. Both helpers are
    answered with inert stand-ins, so the call is refused and no code object is ever made."""
    marker = tmp_path / "pwned"
    code_args = b"(" + b"".join(_binunicode(a) for a in ("import os", f"os.system('touch {marker}')")) + b"t"
    payload = (b"\x80\x02cdill._dill\n_create_function\n"
               + b"(cdill._dill\n_create_code\n" + code_args + b"R}" + _binunicode("f") + b"tR"  # f = function
               + b")R.")  # f()
    (tmp_path / "evil.pkl").write_bytes(payload)
    with pytest.raises(BadInput, match="calls a function stored in the file"):
        load_pickle(tmp_path / "evil.pkl", allow_pickle=True)
    assert not marker.exists()


def test_real_dill_written_vocabulary_loads_without_dill(monkeypatch):
    """``tests/data/safedrug/voc_final_dill.pkl`` was written by ``dill.dump`` (dill 0.4) from a script defining
    SafeDrug's ``Voc`` in ``__main__``, as SafeDrug's processing does: the class travels by value, its methods as
    code objects. It loads without dill into plain vocabularies, and no stored method survives."""
    monkeypatch.setitem(sys.modules, "dill", None)  # dill is not needed (nor importable)
    voc = load_pickle(DATA / "voc_final_dill.pkl", allow_pickle=True)
    assert {name: v.idx2word for name, v in voc.items()} == {
        "diag_voc": {0: "4019", 1: "25000", 2: "41401"}, "med_voc": {0: "N02B", 1: "A02B"},
        "pro_voc": {0: "3893", 1: "9604"}}
    assert all(isinstance(v, SafeDrugVoc) and not hasattr(v, "add_sentence") for v in voc.values())
    assert voc["med_voc"].word2idx == {"N02B": 0, "A02B": 1}


def test_bad_record_ids_are_reported(tmp_path):
    folder = write_synthetic_safedrug(tmp_path / "sd", n_patients=3, main_module=False)
    records = pickle.loads((folder / "records_final.pkl").read_bytes())
    records[1][0][2] = [999]
    (folder / "records_final.pkl").write_bytes(pickle.dumps(records))
    with pytest.raises(ValueError, match=r"patient 1 visit 0: drugs ids \[999\] outside the vocabulary"):
        import_safedrug(folder / "records_final.pkl", folder / "voc_final.pkl", tmp_path / "o", allow_pickle=True)
