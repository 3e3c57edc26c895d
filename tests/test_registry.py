"""The model registry: content-hash versions with their cards, aliases moved and logged only through it, rollback to
bit-identical predictions, and a registry that opens consistent after writers are killed at random moments."""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

import lightning as L
import pytest
import torch

import ldoctor
from ldoctor.callbacks.operating_points import STATE_KEY
from ldoctor.datasets.nih import disease_task
from ldoctor.errors import BadInput
from ldoctor.module import MultiTaskModule
from ldoctor.registry import Registry, RegistryError, UnknownVersion, Version, manifest_hash
from ldoctor.registry.__main__ import main as registry_main
from ldoctor.registry.card import code_version
from ldoctor.report.model_info import file_version

ROOT = Path(__file__).resolve().parents[1]
TASKS = [{"name": "disease", "kind": "multilabel", "num_outputs": 2, "class_names": ["Effusion", "Mass"]}]
#: OperatingPoints state as the callback saves it (plain types); one ECE is undefined (NaN).
POINTS = {"version": 1, "epoch": 3, "rule": "youden", "tasks": {"disease": {
    "calibration": {"method": "temperature", "temperature": [1.5, 0.8]}, "class_names": ["Effusion", "Mass"],
    "columns": [{"name": "Effusion", "threshold": 0.4, "sensitivity": 0.8, "specificity": 0.7,
                 "curve": [[0.4, 0.8, 0.7]], "reason": None}],
    "ece_before": [0.12, float("nan")], "ece_after": [0.05, None], "n": 40}}}


def fake_checkpoint(path: Path, value: float = 0.0, size: int = 16, **extra) -> Path:
    """A small checkpoint as ``train.py fit`` writes one, as far as the registry reads it."""
    torch.save({"hyper_parameters": {"tasks": TASKS, "trunk": "resnet18"},
                "state_dict": {"w": torch.full((size,), float(value))}, **extra}, path)
    return path


def files_of(root: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Every file under ``root`` but the lock: (inode, mtime, mode, bytes)."""
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_mode, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def without_time(entries: list[dict]) -> list[dict]:
    return [{k: v for k, v in entry.items() if k != "time"} for entry in entries]


@pytest.fixture()
def three(tmp_path) -> tuple[Registry, list[str]]:
    """A registry holding three versions, none aliased."""
    registry = Registry(tmp_path / "registry")
    ids = [registry.register(fake_checkpoint(tmp_path / f"v{i}.ckpt", i), {"code_version": "test"})
           for i in (1, 2, 3)]
    return registry, ids


# ----------------------------------------------------------------------------------------------- versions
def test_register_copies_the_checkpoint_read_only_under_its_content_hash_with_its_card(tmp_path):
    source = fake_checkpoint(tmp_path / "last.ckpt", 1.0, callbacks={STATE_KEY: POINTS},
                             ldoctor_validation={"val/disease/auroc": 0.71, "val/tumor/auroc": float("nan")})
    manifest = manifest_hash([{"patient_id": "P1"}, {"patient_id": "P2"}])
    registry = Registry(tmp_path / "registry")
    version_id = registry.register(source, {"data_manifests": {"disease": manifest},
                                            "config": {"model": {"trunk": "resnet18"}}})

    assert version_id == file_version(source) == "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    folder = tmp_path / "registry" / "versions" / version_id
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "model.ckpt"]
    assert (folder / "model.ckpt").read_bytes() == source.read_bytes()
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o444}
    card = json.loads((folder / "card.json").read_text())
    assert registry.get(version_id) == Version(version_id, folder / "model.ckpt", dict(card))
    created = datetime.fromisoformat(card.pop("created"))
    assert created.utcoffset() == timedelta(0) and abs(datetime.now(timezone.utc) - created) < timedelta(minutes=1)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert card.pop("code_version").removesuffix("+dirty") == head
    calibration = json.loads(json.dumps(POINTS).replace("NaN", "null"))  # NaN (undefined) -> null
    assert card == {"schema": "ldoctor.registry.card/1", "version": version_id, "parent": None,
                    "tasks": ["disease"], "trunk": "resnet18", "data_manifests": {"disease": manifest},
                    "config": {"model": {"trunk": "resnet18"}}, "calibration": calibration,
                    "validation": {"val/disease/auroc": 0.71, "val/tumor/auroc": None}, "gate_report": None}
    assert [v.id for v in registry.versions()] == [version_id]

    child = registry.register(fake_checkpoint(tmp_path / "next.ckpt", 2.0), {"parent": version_id})
    assert registry.get(child).card["parent"] == version_id and registry.get(child).card["calibration"] is None
    assert [v.id for v in registry.versions()] == [version_id, child]  # oldest first


def test_registering_the_same_bytes_again_returns_its_id_and_changes_nothing(tmp_path):
    source = fake_checkpoint(tmp_path / "a.ckpt", 1.0)
    registry = Registry(tmp_path / "registry")
    version_id = registry.register(source, {"config": {"lr": 0.1}, "code_version": "test"})
    before = files_of(tmp_path / "registry")
    shutil.copyfile(source, tmp_path / "renamed.ckpt")
    assert registry.register(tmp_path / "renamed.ckpt", {"config": {"lr": 0.1}}) == version_id
    with pytest.warns(UserWarning, match=r"already registered as sha256:.*immutable.*\['config'\]"):
        assert registry.register(source, {"config": {"lr": 0.5}}) == version_id
    assert files_of(tmp_path / "registry") == before
    assert registry.get(version_id).card["config"] == {"lr": 0.1}


@pytest.mark.parametrize(("card", "error", "match"), [
    ({"parnet": None}, ValueError, r"\['parnet'\] cannot be given"),
    ({"version": "sha256:0123456789abcdef"}, ValueError, r"\['version'\] cannot be given"),
    ({"parent": "sha256:0000000000000000"}, UnknownVersion, r"sha256:0000000000000000: no such version"),
    ({"parent": "champion"}, ValueError, r"must be a version id .* got 'champion'"),
    ({"data_manifests": {"tumor": "sha256:0123456789abcdef"}}, ValueError, r"\['tumor'\], not tasks of .*a\.ckpt"),
    ({"config": {"lr": float("nan")}}, ValueError, r"card is not plain JSON"),
    ({"config": "lr=0.1"}, ValueError, r"card\['config'\] must be a dict"),
])
def test_register_refuses_a_bad_card_naming_the_field_and_writes_nothing(tmp_path, card, error, match):
    registry = Registry(tmp_path / "registry")
    with pytest.raises(error, match=match):
        registry.register(fake_checkpoint(tmp_path / "a.ckpt"), card)
    assert list((tmp_path / "registry" / "versions").iterdir()) == []


def test_register_refuses_files_that_are_not_ldoctor_checkpoints_naming_them(tmp_path):
    registry = Registry(tmp_path / "registry")
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    torch.save({"state_dict": {}}, tmp_path / "bare.ckpt")
    with pytest.raises(BadInput, match=r"notes\.ckpt: cannot read as a checkpoint"):
        registry.register(tmp_path / "notes.ckpt")
    with pytest.raises(BadInput, match=r"bare\.ckpt: no task specs"):
        registry.register(tmp_path / "bare.ckpt")
    with pytest.raises(FileNotFoundError, match=r"absent\.ckpt: checkpoint not found"):
        registry.register(tmp_path / "absent.ckpt")
    assert list((tmp_path / "registry" / "versions").iterdir()) == []


def test_verify_names_a_checkpoint_changed_after_registration(three):
    registry, (v1, _, _) = three
    assert registry.verify(v1).id == v1
    path = registry.get(v1).path
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte flipped
    path.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match=rf"{path}: its bytes hash to sha256:\w+, not to its version id {v1}"):
        registry.verify(v1)


def test_manifest_hash_sorts_counts_duplicates_and_hashes_file_contents(tmp_path):
    records = [{"patient_id": "P2"}, {"patient_id": 7}, {"patient_id": "P2"}]
    expected = "sha256:" + hashlib.sha256(b"patient:7\npatient:P2\npatient:P2").hexdigest()[:16]
    assert manifest_hash(records) == manifest_hash(records[::-1]) == expected
    assert manifest_hash(records[:2]) != expected  # one image fewer of patient P2
    assert manifest_hash([{"subject_id": 7}], key="subject_id") == manifest_hash([{"patient_id": "7"}])

    (tmp_path / "a").mkdir()
    first, same, other = tmp_path / "a" / "x.png", tmp_path / "y.png", tmp_path / "z.png"
    first.write_bytes(b"pixels")
    same.write_bytes(b"pixels")
    other.write_bytes(b"pixelz")
    entry = "file:sha256:" + hashlib.sha256(b"pixels").hexdigest()[:16]
    assert manifest_hash([first]) == manifest_hash([str(same)]) == "sha256:" + hashlib.sha256(
        entry.encode()).hexdigest()[:16]
    assert manifest_hash([other]) != manifest_hash([first])
    both = sorted([entry, "patient:P1"])
    assert manifest_hash([first, {"patient_id": "P1"}]) == "sha256:" + hashlib.sha256(
        "\n".join(both).encode()).hexdigest()[:16]

    with pytest.raises(ValueError, match=r"record 1 has no 'patient_id' \(its keys: \['subject_id'\]\)"):
        manifest_hash([{"patient_id": 1}, {"subject_id": 2}])
    with pytest.raises(ValueError, match="no records or files"):
        manifest_hash([])
    with pytest.raises(FileNotFoundError, match=r"gone\.png: item 0"):
        manifest_hash([tmp_path / "gone.png"])


def test_code_version_is_the_git_commit_else_the_package_version(monkeypatch):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert code_version().removesuffix("+dirty") == head

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert code_version() == f"ldoctor {ldoctor.__version__}"


# ----------------------------------------------------------------------------------------------- aliases
def test_aliases_move_only_to_known_versions_and_every_move_is_logged(three):
    registry, (v1, v2, _) = three
    assert registry.set_alias("champion", v1, who="alice", why="first model") is not None
    registry.set_alias("champion", v2, who="gate", why="passed the gate", gate_report="gate-0002")
    registry.set_alias("stable", "champion", who="bob", why="pin")  # an alias resolves to its version
    assert registry.set_alias("champion", v2, who="gate", why="again") is None  # nothing moved, nothing logged

    assert json.loads(registry.aliases_path.read_text()) == registry.aliases() == {"champion": v2, "stable": v2}
    lines = registry.log_path.read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert without_time(entries) == [
        {"who": "alice", "alias": "champion", "from": None, "to": v1, "why": "first model", "gate_report": None,
         "action": "set"},
        {"who": "gate", "alias": "champion", "from": v1, "to": v2, "why": "passed the gate",
         "gate_report": "gate-0002", "action": "set"},
        {"who": "bob", "alias": "stable", "from": None, "to": v2, "why": "pin", "gate_report": None, "action": "set"},
    ]
    assert all(datetime.fromisoformat(e["time"]).utcoffset() == timedelta(0) for e in entries)
    assert registry.history("champion") == entries[:2] and registry.moves() == entries
    assert registry.get("champion").id == v2 and registry.get("champion").path.is_file()

    with pytest.raises(UnknownVersion, match=r"sha256:ffffffffffffffff: no such version"):
        registry.set_alias("champion", "sha256:ffffffffffffffff", who="eve", why="typo")
    with pytest.raises(UnknownVersion, match=r"'champoin': neither a version id .*aliases: \['champion', 'stable'\]"):
        registry.set_alias("champion", "champoin", who="eve", why="typo")
    with pytest.raises(ValueError, match=r"alias '2nd'"):
        registry.set_alias("2nd", v1, who="eve", why="digits first")
    with pytest.raises(ValueError, match="why must say something"):
        registry.set_alias("champion", v1, who="eve", why=" ")
    with pytest.raises(UnknownVersion, match="'nope': no such alias"):
        registry.history("nope")
    assert registry.log_path.read_text().splitlines() == lines  # refused moves leave no trace


def test_rollback_walks_back_one_promotion_at_a_time_and_refuses_without_a_previous(three):
    registry, (v1, v2, v3) = three
    for version in (v1, v2, v3):
        registry.set_alias("champion", version, who="gate", why="passed")
    assert registry.rollback(who="alice", why="site B complaints") == v2
    assert registry.rollback(who="alice", why="still worse") == v1
    assert registry.get("champion").id == v1
    with pytest.raises(RegistryError, match=rf"'champion' has no previous version .* at {v1} with nothing before"):
        registry.rollback(who="alice", why="once more")
    registry.set_alias("champion", v3, who="gate", why="passed again")
    assert registry.rollback(who="alice", why="undo") == v1
    assert without_time(registry.history("champion"))[3:5] == [
        {"who": "alice", "alias": "champion", "from": v3, "to": v2, "why": "site B complaints", "gate_report": None,
         "action": "rollback"},
        {"who": "alice", "alias": "champion", "from": v2, "to": v1, "why": "still worse", "gate_report": None,
         "action": "rollback"}]
    with pytest.raises(UnknownVersion, match="'stable': no such alias"):
        registry.rollback("stable", who="alice", why="never set")


def test_rollback_gives_back_bit_identical_predictions(tmp_path, one_thread):
    torch.manual_seed(0)
    module = MultiTaskModule(tasks=[disease_task(["Effusion", "Mass"])], trunk="resnet18")
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu", enable_progress_bar=False)
    trainer.strategy.connect(module)
    images = {"disease": {"image": torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))}}

    def predict(model: MultiTaskModule) -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            return model(images)["disease"]

    before = predict(module)
    trainer.save_checkpoint(tmp_path / "v1.ckpt")
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.01)  # an update: every weight changed
    trainer.save_checkpoint(tmp_path / "v2.ckpt")

    registry = Registry(tmp_path / "registry")
    v1 = registry.register(tmp_path / "v1.ckpt")
    registry.set_alias("champion", v1, who="gate", why="first")
    v2 = registry.register(tmp_path / "v2.ckpt", {"parent": v1})
    registry.set_alias("champion", v2, who="gate", why="update")
    updated = predict(MultiTaskModule.load_from_checkpoint(registry.get("champion").path, map_location="cpu"))
    assert not torch.equal(updated, before)

    assert registry.rollback(who="alice", why="the update misses effusions") == v1
    restored = MultiTaskModule.load_from_checkpoint(registry.get("champion").path, map_location="cpu")
    assert torch.equal(predict(restored), before)


# ----------------------------------------------------------------------------------------------- crashes
def test_a_torn_last_log_line_is_ignored_with_a_warning_and_cut_by_the_next_writer(three):
    registry, (v1, v2, _) = three
    registry.set_alias("champion", v1, who="gate", why="first")
    with open(registry.log_path, "ab") as log:
        log.write(b'{"time": "2026-')  # a writer that died mid-append
    with pytest.warns(UserWarning, match=r"log\.jsonl: its last line is incomplete \(15 bytes"):
        assert len(registry.moves()) == 1
    with pytest.warns(UserWarning, match="last line was incomplete .*ignored and removed"):
        reopened = Registry(registry.root)
    assert registry.log_path.read_bytes().endswith(b"\n") and len(reopened.moves()) == 1
    reopened.set_alias("champion", v2, who="gate", why="second")
    assert [e["to"] for e in map(json.loads, registry.log_path.read_text().splitlines())] == [v1, v2]


@pytest.mark.parametrize(("aliases_text", "match"), [
    ('{"champion": "V1"}', r"the last logged move \(champion: V1 -> V2, .*\) had not reached it.*completed"),
    ('{"champion": "V2", "extra": "V1"}', r"had extra -> V1, which log\.jsonl does not record.*restored extra -> None"),
    ("{", r"aliases\.json: not valid JSON .*rewritten from log\.jsonl"),
    ('{"champion": "../../etc"}', r"aliases\.json: expected \{alias: version id\}.*rewritten from log\.jsonl"),
])
def test_aliases_json_that_disagrees_with_the_log_is_restored_from_it(three, aliases_text, match):
    registry, (v1, v2, _) = three
    registry.set_alias("champion", v1, who="gate", why="first")
    registry.set_alias("champion", v2, who="gate", why="second")
    registry.aliases_path.write_text(aliases_text.replace("V1", v1).replace("V2", v2))
    with pytest.warns(UserWarning, match=match.replace("V1", v1).replace("V2", v2)):
        reopened = Registry(registry.root)
    assert reopened.aliases() == json.loads(registry.aliases_path.read_text()) == {"champion": v2}


def test_a_damaged_log_line_is_refused_naming_the_line(three):
    registry, (v1, v2, _) = three
    registry.set_alias("champion", v1, who="gate", why="first")
    registry.set_alias("champion", v2, who="gate", why="second")
    lines = registry.log_path.read_text().splitlines()
    registry.log_path.write_text("\n".join([lines[0][:-3], lines[1]]) + "\n")
    with pytest.raises(RegistryError, match=r"log\.jsonl line 1: not valid JSON"):
        registry.history("champion")
    registry.log_path.write_text(lines[0].replace(v1, "../x") + "\n" + lines[1] + "\n")
    with pytest.raises(RegistryError, match=r"log\.jsonl line 1: 'from' and 'to' must be version ids"):
        Registry(registry.root)


def test_what_a_killed_writer_left_is_invisible_and_removed_by_the_next_writer(three):
    registry, (v1, _, _) = three
    partial = registry.versions_dir / ".incoming-999999-abcd"
    partial.mkdir()
    (partial / "model.ckpt").write_bytes(b"half a checkp")
    (registry.root / ".aliases.json.tmp-999999").write_text('{"champ')
    assert len(registry.versions()) == 3
    registry.set_alias("champion", v1, who="gate", why="first")
    assert not partial.exists() and not (registry.root / ".aliases.json.tmp-999999").exists()


def test_a_second_writer_waits_for_the_lock_and_gives_up_naming_it(three):
    registry, (v1, v2, _) = three
    other = Registry(registry.root, lock_timeout=0.3)
    with registry.lock():  # re-entrant for its holder
        registry.set_alias("champion", v1, who="gate", why="first")
        with pytest.raises(RegistryError, match=rf"\.lock: another writer \(process {os.getpid()}\) has held"):
            other.set_alias("champion", v2, who="bob", why="meanwhile")
    other.set_alias("champion", v2, who="bob", why="after")
    assert registry.get("champion").id == v2


#: Run by the kill test: forks writers that register big checkpoints and move aliases until killed.
CHURN = r"""
import os, sys, traceback
import torch
from ldoctor.registry import Registry

root, work = sys.argv[1], sys.argv[2]
TASKS = [{"name": "disease", "kind": "multilabel", "num_outputs": 2}]

def checkpoint(value):
    path = os.path.join(work, f"{os.getpid()}.ckpt")
    torch.save({"hyper_parameters": {"tasks": TASKS}, "state_dict": {"w": torch.full((1_000_000,), value)}}, path)
    return path

def churn(round_):
    registry = Registry(root)
    for step in range(1, 1_000_000):
        version = registry.register(checkpoint(round_ * 1000.0 + step), {"code_version": "kill-test"})
        registry.set_alias("champion", version, who="kill-test", why=f"round {round_} step {step}")
        if step % 3 == 0:
            registry.rollback(who="kill-test", why=f"round {round_} step {step}: undo")

Registry(root).register(checkpoint(-1.0), {"code_version": "kill-test"})  # imports done once, before forking
print("ready", flush=True)
for line in sys.stdin:
    if line.startswith("fork"):
        child = os.fork()
        if child == 0:
            try:
                churn(int(line.split()[1]))
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(3)
        print(child, flush=True)
    else:
        print(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]), flush=True)
"""


def check_consistent(root: Path, verified: set[str]) -> list[dict]:
    """What a reader finds after a writer died: complete versions only, aliases.json valid and pointing at them (and
    equal to the log's state, or one logged move behind it), the log parseable but for a torn last line. Then
    opening the registry repairs it to the log's state. Returns the log's entries."""
    visible = {p.name: p for p in (root / "versions").iterdir() if not p.name.startswith(".")}
    for name, folder in visible.items():
        if name not in verified:
            assert sorted(p.name for p in folder.iterdir()) == ["card.json", "model.ckpt"], name
            assert json.loads((folder / "card.json").read_text())["version"] == name
            assert file_version(folder / "model.ckpt") == name
            verified.add(name)
    *lines, torn = (root / "log.jsonl").read_bytes().split(b"\n") if (root / "log.jsonl").exists() else [b""]
    entries = [json.loads(line) for line in lines]
    assert {e["to"] for e in entries} <= visible.keys()
    found = json.loads((root / "aliases.json").read_text()) if (root / "aliases.json").exists() else {}
    state = {e["alias"]: e["to"] for e in entries}
    behind = {e["alias"]: e["to"] for e in entries[:-1]}
    assert found == state if torn else found in (state, behind)  # the log is written first
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = Registry(root)
    assert len(caught) == (found != state) + bool(torn), [str(w.message) for w in caught]
    assert registry.aliases() == state and len(registry.moves()) == len(entries)
    return entries


@pytest.mark.slow
def test_writers_killed_at_random_moments_leave_the_registry_consistent(tmp_path):
    root, work = tmp_path / "registry", tmp_path / "work"
    work.mkdir()
    churn = subprocess.Popen([sys.executable, "-c", CHURN, str(root), str(work)], cwd=ROOT, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert churn.stdout.readline() == "ready\n", churn.stderr.read()
        rng, verified, moves = random.Random(0), set(), 0
        for round_ in range(1, 9):
            churn.stdin.write(f"fork {round_}\n")
            churn.stdin.flush()
            writer = int(churn.stdout.readline())
            time.sleep(rng.uniform(0.02, 0.6))
            os.kill(writer, signal.SIGKILL)
            churn.stdin.write("reap\n")
            churn.stdin.flush()
            assert churn.stdout.readline() == f"{-signal.SIGKILL}\n", churn.stderr.read()  # killed, not failed
            moves = len(check_consistent(root, verified))
        assert moves > 0
        Registry(root).set_alias("champion", next(iter(verified)), who="test", why="the lock is free again")
    finally:
        churn.kill()
        churn.wait()
        shutil.rmtree(root, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- mirrors, CLI
def test_importing_the_registry_loads_neither_torch_nor_lightning():
    code = "import sys, ldoctor.registry.__main__; print(sorted({'torch', 'lightning'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"



class Recording:
    """A mirror that remembers what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def on_register(self, version: Version) -> None:
        self.calls.append(("register", version.id))

    def on_alias(self, name: str, version: Version) -> None:
        self.calls.append(("alias", name, version.id))


class Failing(Recording):
    def on_alias(self, name: str, version: Version) -> None:
        raise ConnectionError("tracking server unreachable")


def test_mirrors_hear_of_each_new_version_and_every_alias_move(tmp_path):
    mirror = Recording()
    registry = Registry(tmp_path / "registry", mirrors=[mirror])
    v1 = registry.register(fake_checkpoint(tmp_path / "a.ckpt", 1.0))
    assert registry.register(tmp_path / "a.ckpt") == v1  # nothing new: not mirrored again
    v2 = registry.register(fake_checkpoint(tmp_path / "b.ckpt", 2.0))
    registry.set_alias("champion", v1, who="gate", why="first")
    registry.set_alias("champion", v2, who="gate", why="second")
    registry.rollback(who="alice", why="undo")
    assert mirror.calls == [("register", v1), ("register", v2), ("alias", "champion", v1),
                            ("alias", "champion", v2), ("alias", "champion", v1)]

    failing = Registry(tmp_path / "registry", mirrors=[Failing()])
    with pytest.raises(RegistryError, match=r"Failing\.on_alias failed \(ConnectionError: .*already holds the change"):
        failing.set_alias("champion", v2, who="gate", why="again")
    assert failing.get("champion").id == v2


@pytest.mark.slow  # MLflow creates its database tables: seconds
def test_mlflow_mirror_holds_each_version_and_the_champion_alias(tmp_path):
    pytest.importorskip("mlflow")
    from ldoctor.registry.mirror import MLflowMirror

    mirror = MLflowMirror(f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=(tmp_path / "mlruns").as_uri())
    registry = Registry(tmp_path / "registry", mirrors=[mirror])
    v1 = registry.register(fake_checkpoint(tmp_path / "a.ckpt", 1.0))
    v2 = registry.register(fake_checkpoint(tmp_path / "b.ckpt", 2.0))
    registry.set_alias("champion", v1, who="gate", why="first")
    registry.set_alias("champion", v2, who="gate", why="second")
    registry.rollback(who="alice", why="undo")

    champion = mirror.client.get_model_version_by_alias("ldoctor", "champion")
    assert champion.tags["ldoctor.version"] == v1 and str(champion.version) == mirror.model_version(v1)
    copy = Path(mirror.client.download_artifacts(champion.run_id, "model/model.ckpt", str(tmp_path / "down")))
    assert copy.read_bytes() == registry.get(v1).path.read_bytes()


def test_command_line_lists_shows_promotes_rolls_back_and_logs(tmp_path, capsys):
    root = str(tmp_path / "registry")
    with pytest.raises(SystemExit) as exit_:
        registry_main(["--root", root, "list"])
    assert exit_.value.code == 2 and "no model registry here" in capsys.readouterr().err
    ids = []
    for value in (1.0, 2.0):
        registry_main(["--root", root, "register", str(fake_checkpoint(tmp_path / f"{value}.ckpt", value))])
        ids.append(capsys.readouterr().out.strip())
    v1, v2 = ids
    registry_main(["--root", root, "promote", v1, "--why", "first"])  # --who: the login name
    registry_main(["--root", root, "promote", v2, "--who", "gate", "--why", "passed", "--gate-report", "gate-7"])
    assert capsys.readouterr().out.splitlines() == [f"champion: None -> {v1}", f"champion: {v1} -> {v2}"]
    registry_main(["--root", root, "list"])
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == [v1, v2] and listed[1].endswith("aliases=champion")
    registry_main(["--root", root, "show", "champion"])
    assert json.loads(capsys.readouterr().out)["card"]["version"] == v2
    registry_main(["--root", root, "rollback", "--who", "alice", "--why", "undo"])
    assert capsys.readouterr().out.strip() == f"champion: {v2} -> {v1}"
    registry_main(["--root", root, "log", "--alias", "champion"])
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["who"], e["to"], e["gate_report"], e["action"]) for e in logged] == [
        (getpass.getuser(), v1, None, "set"), ("gate", v2, "gate-7", "set"), ("alice", v1, None, "rollback")]
    with pytest.raises(SystemExit) as exit_:
        registry_main(["--root", root, "rollback", "--who", "alice", "--why", "again"])
    assert exit_.value.code == 2 and "'champion' has no previous version" in capsys.readouterr().err
