"""Synthetic datasets with a learnable signal for each task kind (smoke runs, tests, throughput benchmarks)."""

from __future__ import annotations

from ldoctor.datasets.synthetic.datasets import SyntheticHistories, SyntheticNoduleViews, SyntheticRadiographs

__all__ = ["SyntheticHistories", "SyntheticNoduleViews", "SyntheticRadiographs"]
