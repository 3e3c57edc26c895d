"""CSV tables (plain or ``.gz``) read with their required columns checked up front, and one translation of what a
damaged table raises into a :class:`~ldoctor.errors.BadInput` naming the file.

Every CSV a reader of ldoctor opens goes through :func:`read_csv`: a truncated or damaged ``.gz`` (``EOFError``,
``zlib.error``), a file named ``.gz`` that is not gzip (``gzip.BadGzipFile``), bytes that are not UTF-8
(``UnicodeDecodeError``; the message gives the file's byte offset and line), an empty file (pandas
``EmptyDataError``) and a malformed CSV (pandas ``ParserError``) each end in one line naming the file and what was
expected, instead of a pandas traceback.
"""

from __future__ import annotations

import codecs
import gzip
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ldoctor.errors import BadInput

GZIP_MAGIC = b"\x1f\x8b"
#: Bytes read at a time when looking for the first byte that is not UTF-8.
_CHUNK = 1 << 20


def first_non_utf8(path: str | Path) -> tuple[int, int, int] | None:
    """Where ``path`` (decompressed when it ends in ``.gz``) stops being UTF-8.

    Returns:
        ``(byte offset, line, byte value)`` of the first byte that is not valid UTF-8 (offset 0-based, in the
        decompressed text; line 1-based), or ``None`` when the whole file decodes.
    """
    path = Path(path)
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines = 0, 0
    with (gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as handle:
        while chunk := handle.read(_CHUNK):
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                data = err.object  # the decoder's pending bytes + this chunk
                return offset - pending + err.start, lines + data[: err.start].count(b"\n") + 1, data[err.start]
            offset += len(chunk)
            lines += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as err:  # the file ends inside a multi-byte character
            return offset - len(err.object) + err.start, lines + 1, err.object[err.start]
    return None


def _not_utf8(path: Path, err: UnicodeDecodeError, expected: str) -> BadInput:
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
        where = first_non_utf8(path)
    except (OSError, EOFError, zlib.error):
        head, where = b"", None
    if head == GZIP_MAGIC and not path.name.endswith(".gz"):
        return BadInput(f"{path}: gzip-compressed, but its name does not end in .gz; expected {expected}; rename it "
                        f"to {path.name}.gz or decompress it")
    at = f"byte {where[0]} (line {where[1]}) is 0x{where[2]:02x}" if where else f"{err.reason} ({err})"
    return BadInput(f"{path}: not UTF-8 text: {at}; expected {expected}, encoded as UTF-8; re-encode it, e.g. "
                    f"`iconv -f latin1 -t utf-8 {path.name} > utf8.csv` (or save it as 'CSV UTF-8')")


@contextmanager
def table_errors(path: str | Path, expected: str) -> Iterator[None]:
    """Turn what reading a damaged CSV raises into a :class:`BadInput` naming ``path`` and ``expected``.

    Args:
        path: the table's file.
        expected: what it should be, for the message (e.g. ``"the NIH Data_Entry_2017 label table"``).
    """
    path = Path(path)
    compressed = path.name.endswith(".gz")
    try:
        yield
    except (EOFError, zlib.error) as err:
        damage = "truncated (EOFError" if isinstance(err, EOFError) else "damaged (zlib error"
        raise BadInput(f"{path}: the gzip stream is {damage}: {err}); expected {expected} as a complete .gz file; "
                       "copy or download it again") from None
    except gzip.BadGzipFile as err:
        raise BadInput(f"{path}: not a gzip file ({err}) although its name ends in .gz; expected {expected}, "
                       "gzip-compressed; rename it without .gz if it is plain text") from None
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err, expected) from None
    except pd.errors.EmptyDataError:
        raise BadInput(f"{path}: empty (no header line); expected {expected} with a header line"
                       f"{' (the .gz holds no data)' if compressed else ''}") from None
    except pd.errors.ParserError as err:
        reason = str(err).strip().removeprefix("Error tokenizing data. C error: ")
        raise BadInput(f"{path}: malformed CSV ({reason}); expected {expected}, comma-separated, the same number of "
                       "fields on every line, quotes closed") from None


def read_csv(path: str | Path, expected: str, **options: Any) -> pd.DataFrame:
    """``pandas.read_csv(path, **options)`` (``.gz`` decompressed, UTF-8) with :func:`table_errors`' messages.

    Args:
        path: a ``.csv`` or ``.csv.gz`` file.
        expected: what the file should be, for messages.
        options: ``pandas.read_csv`` options (``dtype``, ``usecols``, ``nrows``, ...); not reached by configs.

    Raises:
        FileNotFoundError: no such file. BadInput: the file is damaged, not UTF-8, empty or malformed.
    """
    with table_errors(path, expected):
        return pd.read_csv(path, encoding="utf-8", **options)


def read_text_lines(path: str | Path, expected: str) -> list[str]:
    """The non-blank, stripped lines of a UTF-8 text file (e.g. a split list), with :func:`table_errors`' messages
    for bytes that are not UTF-8."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err, expected) from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_csv_columns(path: str | Path, required: Sequence[str], what: str = "a CSV table") -> pd.DataFrame:
    """Read only ``required`` columns of a CSV (names matched case-insensitively) as strings.

    Args:
        path: a ``.csv`` or ``.csv.gz`` file.
        required: the column names needed (lower case).
        what: what the table is, for messages (e.g. ``"the MIMIC-III table ADMISSIONS"``).

    Returns:
        a DataFrame with lower-case column names, empty cells as ``""``, and a ``line`` column holding each
        row's 1-based line number in the file (the header is line 1).

    Raises:
        BadInput: a required column is missing (the message lists the columns found); the file is damaged, not
            UTF-8, empty or malformed (:func:`table_errors`).
    """
    path = Path(path)
    expected = f"{what} with the columns {list(required)} (any case)"
    header = read_csv(path, expected, nrows=0).columns
    by_lower = {str(c).strip().lower(): c for c in header}
    missing = [c for c in required if c not in by_lower]
    if missing:
        raise BadInput(
            f"{path}: missing column(s) {missing}; expected {list(required)} (any case), found {list(header)}"
        )
    frame = read_csv(path, expected, usecols=[by_lower[c] for c in required], dtype=str, keep_default_na=False,
                     na_filter=False)
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    frame = frame[list(required)].apply(lambda col: col.str.strip())
    frame["line"] = np.arange(2, len(frame) + 2)
    return frame
