"""Seconds per three-task case report on this machine: load the checkpoint, predict, explain (test-time augmentation,
Grad-CAM), render.

The model is the full-size 1v3 design (ResNet-50 trunk at the shipped configs' input sizes: 64 mm nodule cubes at
1 mm, three 2.5D views of 64 px; radiographs at 224 px); its weights are random, which does not change the cost. The
case is built from the shipped real data: one LIDC-IDRI nodule's CT (written as NIfTI with its candidate list), one
ChestX-ray14 radiograph and one MIMIC-III demo patient's admissions. Each repeat runs ``python -m ldoctor.report``'s
``main`` in this process (a new Trainer each time, as a user's call would); the first repeat is reported apart (it
includes one-off imports and allocations).

    python benchmarks/report_latency.py --repeats 3 --out outputs/bench_report/latency.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from ldoctor.callbacks.operating_points import STATE_KEY
from ldoctor.datasets.lidc import SliceStacks, tumor_task
from ldoctor.datasets.mimic import drug_task
from ldoctor.datasets.mimic.records import DEMO_DIR, DEMO_NDC_MAP, build_vocabularies, read_mimic_admissions
from ldoctor.datasets.nih import disease_task
from ldoctor.errors import BadInputLog
from ldoctor.evaluation.calibration import fit_operating_points
from ldoctor.evaluation.report import write_result
from ldoctor.module import MultiTaskModule
from ldoctor.report.__main__ import main as report
from ldoctor.report.demo_case import write_history, write_nodule_ct

DEMO_DATA = Path(__file__).resolve().parents[1] / "ldoctor" / "demo_data"
SETTINGS = {
    "tumor": {"input": "ct_nodule", "patch_size_mm": 64.0, "spacing_mm": 1.0, "hu_window": [-1000.0, 400.0],
              "views": ["axial", "coronal", "sagittal"], "view_channels": "planes", "radiomics": "none",
              "default_rescale": None, "description": "latency benchmark (random weights)"},
    "disease": {"input": "radiograph", "image_size": 224, "description": "latency benchmark (random weights)"},
    "drug": {"input": "history", "description": "latency benchmark (random weights)"},
}


def write_case(folder: Path) -> tuple[Path, list[dict]]:
    """The shipped-data case and the MIMIC demo admissions (for the vocabularies)."""
    folder.mkdir(parents=True, exist_ok=True)
    nodule = SliceStacks(str(DEMO_DATA / "lidc-real" / "lidc-slices")).read(BadInputLog())[0]
    write_nodule_ct(folder, {"volume": nodule["volume"], "center_mm": nodule["center_mm"]})  # no stated diameter
    shutil.copyfile(sorted((DEMO_DATA / "nih-cxr14-64" / "images").glob("*.png"))[0], folder / "radiograph.png")
    records, _ = read_mimic_admissions(DEMO_DIR, DEMO_NDC_MAP)
    write_history(folder, records)
    return folder, records


def write_checkpoint(path: Path, records: list[dict]) -> Path:
    """A ResNet-50 three-task checkpoint with case-reading settings and disease operating points (3 findings
    flagged on the benchmark's radiograph is typical of the demo)."""
    drugs, codes = build_vocabularies(records, records, history_drugs=True)
    module = MultiTaskModule(tasks=[tumor_task(), disease_task(), drug_task(drugs, codes)], trunk="resnet50")
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu", enable_progress_bar=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 14)) < 0.3).astype(float)
    points = fit_operating_points(2.0 * (labels - 0.5) + rng.normal(0, 1.5, labels.shape), labels,
                                  disease_task().class_names)
    saved["callbacks"] = {STATE_KEY: {"version": 1, "epoch": 0, "rule": "youden", "tasks": {"disease": points}}}
    saved["ldoctor_inference"] = SETTINGS
    torch.save(saved, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        case, records = write_case(Path(tmp) / "case")
        checkpoint = write_checkpoint(Path(tmp) / "model.ckpt", records)
        seconds, reports = [], []
        for k in range(args.repeats + 1):
            start = time.perf_counter()
            (html,) = report([str(case), "--ckpt", str(checkpoint), "--out", str(Path(tmp) / f"out{k}")])
            seconds.append(time.perf_counter() - start)
            reports.append(json.loads(html.with_name("report.json").read_text()))
        size_kb = html.stat().st_size / 1024
    last = reports[-1]
    result = {
        "first_case_seconds": seconds[0],
        "seconds_per_case": statistics.median(seconds[1:]),
        "repeats": seconds[1:],
        "target_seconds": 10.0,
        "html_kb": size_kb,
        "nodules": len(last["tumor"]["nodules"]), "gradcam_findings": sum(f["heatmap"] for f in
                                                                          last["disease"]["findings"]),
        "trunk": "resnet50", "threads": torch.get_num_threads(),
        "inputs": last["case"]["inputs"],
    }
    table = (f"report latency (ResNet-50, CPU, {result['threads']} threads): "
             f"{result['seconds_per_case']:.2f} s per three-task case (median of {args.repeats}; first "
             f"{result['first_case_seconds']:.2f} s), page {size_kb:.0f} kB, {result['gradcam_findings']} Grad-CAM maps")
    write_result(result, args.out, table)


if __name__ == "__main__":
    main()
