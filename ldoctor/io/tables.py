"""CSV tables read with their required columns checked up front."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ldoctor.errors import BadInput


def read_csv_columns(path: str | Path, required: Sequence[str]) -> pd.DataFrame:
    """Read only ``required`` columns of a CSV (names matched case-insensitively) as strings.

    Returns:
        a DataFrame with lower-case column names, empty cells as ``""``, and a ``line`` column holding each
        row's 1-based line number in the file (the header is line 1).

    Raises:
        ValueError: a required column is missing; the message lists the columns found.
    """
    path = Path(path)
    header = pd.read_csv(path, nrows=0).columns
    by_lower = {str(c).strip().lower(): c for c in header}
    missing = [c for c in required if c not in by_lower]
    if missing:
        raise BadInput(
            f"{path}: missing column(s) {missing}; expected {list(required)} (any case), found {list(header)}"
        )
    frame = pd.read_csv(
        path, usecols=[by_lower[c] for c in required], dtype=str, keep_default_na=False, na_filter=False
    )
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    frame = frame[list(required)].apply(lambda col: col.str.strip())
    frame["line"] = np.arange(2, len(frame) + 2)
    return frame
