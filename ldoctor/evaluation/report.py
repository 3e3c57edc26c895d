"""How a benchmark script ends: its result as JSON (printed, and written to ``--out``) and its table."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def write_result(result: dict, out: str | Path | None, table: str = "") -> None:
    """Print ``result`` as JSON and then ``table``; also write the JSON to ``out`` (folders created) when given."""
    text = json.dumps(result, indent=2, default=float)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    sys.stdout.write(text + "\n" + (table + "\n" if table else ""))
