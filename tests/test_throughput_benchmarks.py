"""benchmarks/throughput.py and benchmarks/loader_throughput.py run in-process on tiny settings: the structure that
makes each comparison fair (the same trunk passes per step in each pair; the same loader settings and timed
epochs for both loader pipelines) and the reported repeats and spreads. No timing is asserted: timings are noise
at this size."""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType

import pytest
from torch import nn
from torch.nn.modules.module import register_module_forward_hook

from tests.helpers import ROOT


def load_benchmark(script: str) -> ModuleType:
    """Import ``benchmarks/<script>`` (the folder is not a package) as a fresh module."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.removesuffix('.py')}", ROOT / "benchmarks" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_pairs_do_the_same_trunk_passes(tmp_path, monkeypatch, one_thread):
    bench = load_benchmark("throughput.py")
    warmup, steps, repeats, batch = 1, 1, 2, 3
    # every call of a trunk starts with its stem convolution, the only one taking 3 input channels: counted
    # independently of the script's own hook, over every step (timed ones included), per run
    stem_calls: list[list[int]] = []

    def count_stem(module: nn.Module, inputs: tuple, output) -> None:
        if isinstance(module, nn.Conv2d) and module.in_channels == 3 and stem_calls:
            stem_calls[-1].append(int(inputs[0].shape[0]))

    def counted(run):
        def wrapper(args, tasks, device):
            stem_calls.append([])
            record = run(args, tasks, device)
            record["stem_calls"] = stem_calls[-1]
            return record
        return wrapper

    for name in ("plain_loop", "lightning_run"):
        monkeypatch.setattr(bench, name, counted(getattr(bench, name)))
    out = tmp_path / "throughput.json"
    handle = register_module_forward_hook(count_stem)
    try:
        result = bench.main(["--trunk", "resnet18", "--image-size", "32", "--batch-size", str(batch),
                             "--steps", str(steps), "--warmup", str(warmup), "--repeats", str(repeats),
                             "--out", str(out)])
    finally:
        handle.remove()
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))

    # runs in the order a, b, a2, c per repeat; each run's stem calls: (warmup + steps) steps of the same calls
    per_step = {"plain": [batch], "single": [batch], "plain_multi": [batch, batch], "multi": [batch, batch]}
    assert len(stem_calls) == repeats * len(per_step)
    order = list(per_step) * repeats
    for key, calls in zip(order, stem_calls):
        assert calls == per_step[key] * (warmup + steps), key

    # the script's own record agrees, and each compared pair does the same work per step
    passes = result["trunk_passes"]
    for key, calls in per_step.items():
        assert passes[key]["trunk_images_per_call"] == calls
    assert passes["plain"] == passes["single"]
    assert passes["plain_multi"] == passes["multi"]
    assert passes["multi"]["head_outputs"] == {"tumor": 1, "disease": 14, "drug": 8}

    # every repeat, the spread and the ratios of the pairs timed in the same repeat
    runs = result["all_runs"]
    assert set(runs) == set(per_step) and all(len(v) == repeats for v in runs.values())
    for key, values in runs.items():
        assert result[f"images_per_s_{key}"] == max(values)
        assert result["spread_images_per_s"][key]["min"] == min(values)
        assert result["spread_images_per_s"][key]["max"] == max(values)
    assert result["ratio_multi"] == pytest.approx(max(runs["multi"]) / max(runs["plain_multi"]))
    assert result["ratio_single"] == pytest.approx(max(runs["single"]) / max(runs["plain"]))
    assert result["ratio_multi_vs_single_pass_loop"] == pytest.approx(max(runs["multi"]) / max(runs["plain"]))
    paired = [m / p for m, p in zip(runs["multi"], runs["plain_multi"])]
    assert result["paired_ratios"]["ratio_multi"] == pytest.approx(paired)
    assert result["paired_ratio_range"]["ratio_multi"] == pytest.approx([min(paired), max(paired)])


def test_throughput_rejects_a_batch_the_tumor_views_cannot_fill():
    bench = load_benchmark("throughput.py")
    with pytest.raises(SystemExit):
        bench.parse_args(["--batch-size", "4"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--warmup", "0"])


def test_loader_pipelines_are_timed_alike(tmp_path, monkeypatch, one_thread):
    bench = load_benchmark("loader_throughput.py")
    timed_epochs, workers = 2, 1
    epochs: dict[int, list[tuple[int, bool]]] = {}  # loader -> (workers, persistent) of each epoch run through it
    time_epoch = bench.time_epoch

    def counted(loader):
        epochs.setdefault(id(loader), []).append((loader.num_workers, loader.persistent_workers))
        return time_epoch(loader)

    monkeypatch.setattr(bench, "time_epoch", counted)
    out = tmp_path / "loader.json"
    result = bench.main(["--num-images", "8", "--image-size", "32", "--batch-size", "4", "--num-workers",
                         str(workers), "--timed-epochs", str(timed_epochs), "--out", str(out)])
    assert json.loads(out.read_text()) == result

    # two loaders, each run through its first epoch plus the same number of timed epochs, with the same workers
    assert len(epochs) == 2
    for per_epoch in epochs.values():
        assert per_epoch == [(workers, True)] * (1 + timed_epochs)
    assert result["loader_settings"]["no_cache"] == result["loader_settings"]["cache"]
    assert result["loader_settings"]["cache"]["persistent_workers"] is True
    assert result["timed_epochs"] == {"no_cache": timed_epochs, "cache": timed_epochs}
    assert len(result["no_cache_epochs_seconds"]) == len(result["cached_epochs_seconds"]) == timed_epochs
    for key in ("protocol", "no_cache_first_epoch_images_per_s", "no_cache_images_per_s",
                "cache_first_epoch_images_per_s", "cached_epoch_images_per_s", "speedup_cached_vs_no_cache"):
        assert key in result
