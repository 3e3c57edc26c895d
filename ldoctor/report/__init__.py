"""Case reports: a trained checkpoint and one patient's files -> ``report.json`` + a self-contained ``report.html``.

- :mod:`ldoctor.report.case`: the case folder layout and its validation;
- :mod:`datamodules.cases` / :mod:`ldoctor.report.writer`: ``CaseDataModule`` and ``ReportWriter`` for
  ``train.py predict --config ... --config configs/report.yaml --ckpt_path ...``;
- ``python -m ldoctor.report CASE_DIR --ckpt model.ckpt --out OUT_DIR``: the same in one command;
- :mod:`ldoctor.report.schema`: the versioned ``report.json`` schema; :mod:`ldoctor.report.render`: the page.
"""
