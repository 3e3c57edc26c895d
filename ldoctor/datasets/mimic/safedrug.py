"""Import SafeDrug / GAMENet processed MIMIC-III records into ldoctor's own JSON + npz records.

SafeDrug (Yang et al., IJCAI 2021) and GAMENet (Shang et al., AAAI 2019) publish their processed MIMIC-III
cohort as three pickles: ``records_final.pkl`` (patients -> visits -> ``[diagnosis ids, procedure ids, drug
ids]``), ``voc_final.pkl`` (``{"diag_voc", "pro_voc", "med_voc"}``, objects with ``idx2word``) and
``ddi_A_final.pkl`` (a 0/1 drug-drug interaction adjacency over ``med_voc``). Users with credentialed
MIMIC-III access can convert them ONCE with this module and then compare on the standard cohort.

**Security.** Unpickling a file can execute arbitrary code. ``import_safedrug`` therefore refuses to run
unless called with ``allow_pickle=True``, and even then it uses a restricted unpickler that only builds plain
containers, numpy arrays and the vocabulary objects; no unrestricted loader is ever used. SafeDrug writes
``voc_final.pkl`` with ``dill``, which stores the ``Voc`` class by value (its methods as code objects); the
unpickler answers dill's helpers with inert stand-ins: the class becomes a plain :class:`SafeDrugVoc` that keeps
only the ``idx2word`` / ``word2idx`` state, a method becomes an object that refuses to be called, and no code
object is ever built, so nothing in the file can run. ``dill`` is not needed. Only import files you trust; after
conversion ldoctor reads only JSON and ``np.load(..., allow_pickle=False)``.

Command line::

    python -m ldoctor.datasets.mimic.safedrug --records records_final.pkl --voc voc_final.pkl \\
        --ddi ddi_A_final.pkl --out data/safedrug --allow-pickle
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ldoctor.ddi import write_ddi_pairs
from ldoctor.errors import BadInput

RECORDS_FORMAT = "ldoctor-drug-records/1"
_SAFE_GLOBALS = {
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "set"),
    ("builtins", "tuple"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "str"),
    ("builtins", "object"),
    ("copyreg", "_reconstructor"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"),
}


class SafeDrugVoc:
    """Stand-in for SafeDrug's ``Voc``: only the ``idx2word`` / ``word2idx`` state is kept."""

    idx2word: dict
    word2idx: dict


class _Inert:
    """What a pickled function, code object or type reference becomes: a placeholder that refuses to be called, so
    a file cannot build a function and then call it while it is being read."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __call__(self, *args: object, **kwargs: object) -> None:
        raise pickle.UnpicklingError(f"the file calls {self.what}, which a SafeDrug record file never does")


def _dill_load_type(name: str) -> _Inert:
    return _Inert(f"dill type {name!r}")


def _dill_create_type(kind: object, name: str, bases: object, namespace: object) -> type:
    """dill's by-value class: ``Voc`` becomes a fresh subclass of :class:`SafeDrugVoc` without its methods."""
    if name != "Voc":
        raise pickle.UnpicklingError(f"the file defines a class {name!r}; a SafeDrug record file defines only 'Voc'")
    return type("Voc", (SafeDrugVoc,), {"__module__": __name__})


def _dill_create_function(*args: object) -> _Inert:
    return _Inert("a function stored in the file")


def _dill_create_code(*args: object) -> None:
    return None  # never built: a code object could only be run


def _setattr_on_voc(target: object, name: str, value: object) -> None:
    """dill sets ``__qualname__`` and the like on the class it rebuilt; only that, and only on such a class."""
    if not (isinstance(target, type) and issubclass(target, SafeDrugVoc) and target is not SafeDrugVoc
            and name in {"__qualname__", "__doc__", "__module__", "__slotnames__"}):
        raise pickle.UnpicklingError(f"the file sets {name!r} on {target!r}, which a SafeDrug record file never does")


#: What the unpickler answers for each global a SafeDrug file may name, beyond :data:`_SAFE_GLOBALS`.
_STAND_INS = {
    ("dill._dill", "_load_type"): _dill_load_type,
    ("dill._dill", "_create_type"): _dill_create_type,
    ("dill._dill", "_create_function"): _dill_create_function,
    ("dill._dill", "_create_code"): _dill_create_code,
    ("__builtin__", "__main__"): {},  # a stored function's globals: an empty namespace
    ("builtins", "__main__"): {},
    ("builtins", "setattr"): _setattr_on_voc,
    ("__builtin__", "setattr"): _setattr_on_voc,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201 (pickle API)
        if name == "Voc":
            return SafeDrugVoc
        if (module, name) in _STAND_INS:
            stand_in = _STAND_INS[(module, name)]
            return {} if isinstance(stand_in, dict) else stand_in
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a SafeDrug record file")


def load_pickle(path: str | Path, allow_pickle: bool = False) -> object:
    """Load one SafeDrug pickle with the restricted unpickler (plain or ``dill``-written; never an unrestricted
    loader).

    Raises:
        PermissionError: ``allow_pickle`` is not set.
        BadInput: the file names a global outside the allow-list, or tries to call what it stored (both named in
            the message), or is not a readable pickle.
    """
    path = Path(path)
    if not allow_pickle:
        raise PermissionError(
            f"{path}: loading a pickle can run arbitrary code; pass allow_pickle=True (--allow-pickle) only "
            "for files you trust, e.g. SafeDrug's published records"
        )
    try:
        return _RestrictedUnpickler(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise BadInput(f"{path}: not a SafeDrug record file this importer can read safely ({err})") from None


def _words(voc: object, name: str, path: Path) -> list[str]:
    idx2word = getattr(voc, "idx2word", None)
    if idx2word is None and isinstance(voc, dict):
        idx2word = voc.get("idx2word")
    if not isinstance(idx2word, dict) or sorted(idx2word) != list(range(len(idx2word))):
        raise BadInput(f"{path}: {name} has no idx2word mapping 0..n-1")
    return [str(idx2word[i]) for i in range(len(idx2word))]


def _convert_visit(visit: object, vocab: dict[str, list[str]], where: str) -> dict:
    if not (isinstance(visit, list | tuple) and len(visit) >= 3):
        raise BadInput(f"{where}: expected [diagnosis ids, procedure ids, drug ids], got {type(visit).__name__}")
    out = {}
    for key, ids in zip(("diagnoses", "procedures", "drugs"), visit[:3]):
        words = vocab[key]
        bad = [i for i in ids if not (isinstance(i, int | np.integer) and 0 <= int(i) < len(words))]
        if bad:
            raise BadInput(f"{where}: {key} ids {bad[:5]} outside the vocabulary of {len(words)}")
        out[key] = [words[int(i)] for i in ids]
    return out


def convert_records(records: object, vocab: dict[str, list[str]], path: Path) -> list[dict]:
    """SafeDrug's nested id lists -> our admission records (``subject_id`` / ``hadm_id`` are positions)."""
    if not isinstance(records, list):
        raise BadInput(f"{path}: expected a list of patients, got {type(records).__name__}")
    admissions = []
    for p, patient in enumerate(records):
        for v, visit in enumerate(patient):
            record = _convert_visit(visit, vocab, f"{path} patient {p} visit {v}")
            admissions.append({"subject_id": str(p), "hadm_id": f"{p}_{v}", **record})
    return admissions


def import_safedrug(
    records_path: str | Path,
    voc_path: str | Path,
    out_dir: str | Path,
    ddi_path: str | Path | None = None,
    allow_pickle: bool = False,
) -> Path:
    """Convert SafeDrug / GAMENet pickles into ``records.json`` (+ ``ddi_A.npz`` and ``ddi_pairs.csv``).

    Args:
        records_path: ``records_final.pkl``.
        voc_path: ``voc_final.pkl``.
        out_dir: output folder (created; must not be the input folder's files).
        ddi_path: optional ``ddi_A_final.pkl``.
        allow_pickle: required opt-in; see the module docstring.

    Returns:
        the path of ``records.json``: ``{"format", "source", "drug_vocabulary", "admissions": [...]}``,
        admissions in file order (patient, visit) with ATC-3 drug names and ICD-9 codes.
    """
    out_dir = Path(out_dir)
    voc = load_pickle(voc_path, allow_pickle)
    if not isinstance(voc, dict) or not {"diag_voc", "pro_voc", "med_voc"} <= set(voc):
        raise BadInput(f"{voc_path}: expected a dict with diag_voc, pro_voc and med_voc")
    vocab = {
        key: _words(voc[name], name, Path(voc_path))
        for key, name in (("diagnoses", "diag_voc"), ("procedures", "pro_voc"), ("drugs", "med_voc"))
    }
    admissions = convert_records(load_pickle(records_path, allow_pickle), vocab, Path(records_path))
    out_dir.mkdir(parents=True, exist_ok=True)
    if ddi_path is not None:
        adjacency = np.asarray(load_pickle(ddi_path, allow_pickle), dtype=np.float32)
        n = len(vocab["drugs"])
        if adjacency.shape != (n, n):
            raise BadInput(f"{ddi_path}: DDI matrix has shape {adjacency.shape}, expected {n}x{n} (med_voc)")
        np.savez(out_dir / "ddi_A.npz", ddi_A=adjacency, drugs=np.array(vocab["drugs"]))
        write_ddi_pairs(
            out_dir / "ddi_pairs.csv",
            [(vocab["drugs"][i], vocab["drugs"][j]) for i, j in zip(*np.nonzero(adjacency))],
        )
    document = {
        "format": RECORDS_FORMAT,
        "source": str(records_path),
        "drug_vocabulary": vocab["drugs"],
        "admissions": admissions,
    }
    out = out_dir / "records.json"
    out.write_text(json.dumps(document))
    return out


def load_records_json(path: str | Path) -> tuple[list[dict], list[str]]:
    """Read a ``records.json`` written by ``import_safedrug``.

    Returns:
        (admission records in file order, the drug vocabulary of the source).

    Raises:
        ValueError: not an ldoctor records file, or an admission without the needed keys.
    """
    path = Path(path)
    document = json.loads(path.read_text())
    if not isinstance(document, dict) or document.get("format") != RECORDS_FORMAT:
        raise BadInput(f"{path}: not an ldoctor records file (expected format {RECORDS_FORMAT!r})")
    needed = ("subject_id", "hadm_id", "diagnoses", "procedures", "drugs")
    for i, record in enumerate(document["admissions"]):
        missing = [k for k in needed if k not in record]
        if missing:
            raise BadInput(f"{path}: admission {i} lacks {missing}")
    return document["admissions"], list(document["drug_vocabulary"])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", required=True, help="records_final.pkl")
    parser.add_argument("--voc", required=True, help="voc_final.pkl")
    parser.add_argument("--ddi", default=None, help="ddi_A_final.pkl (optional)")
    parser.add_argument("--out", required=True, help="output folder for records.json / ddi_A.npz / ddi_pairs.csv")
    parser.add_argument("--allow-pickle", action="store_true", help="required: pickles can run code")
    args = parser.parse_args(argv)
    import_safedrug(args.records, args.voc, args.out, args.ddi, args.allow_pickle)


if __name__ == "__main__":
    main()
