"""ldoctor.evaluation.splits: the one patient splitter reproduces the splits of the three splitters it replaces.

The expected digests were produced by running the replaced functions (``split_by_patient`` and
``patient_folds`` of ``ldoctor/data/lidc_annotations.py``, ``split_patients`` of ``ldoctor/data/mimic_records.py``
at commit 569972f) on the inputs built below; ``_digest`` hashes every split's members in order.
"""

from __future__ import annotations

import hashlib
import itertools

import pytest

from ldoctor.evaluation import assign_records, check_patient_disjoint, patient_folds, split_patients

LIDC_FRACTIONS = {
    "70/15/15": {"train": 0.7, "val": 0.15, "test": 0.15},
    "80/20/0": {"train": 0.8, "val": 0.2, "test": 0.0},
}
SAFEDRUG_FRACTIONS = {"train": 2 / 3, "test": 1 / 6, "val": 1 / 6}

#: ``"{n}-{seed}-{fractions}"`` -> digest of the old ``split_by_patient(lidc_records(n), fractions, seed)``.
LIDC_SPLITS = {
    "3-0-70/15/15": "796ebba0ec12c5ba",
    "3-0-80/20/0": "796ebba0ec12c5ba",
    "3-1-70/15/15": "b3758c78ba2bfb57",
    "3-1-80/20/0": "b3758c78ba2bfb57",
    "3-7-70/15/15": "796ebba0ec12c5ba",
    "3-7-80/20/0": "796ebba0ec12c5ba",
    "3-42-70/15/15": "5bc54d3d3df99b1d",
    "3-42-80/20/0": "5bc54d3d3df99b1d",
    "10-0-70/15/15": "8c142c852ed9734d",
    "10-0-80/20/0": "be62621a149440cb",
    "10-1-70/15/15": "19a32e94bcf705df",
    "10-1-80/20/0": "9c3f836902aeaef8",
    "10-7-70/15/15": "19f52b5f316781af",
    "10-7-80/20/0": "ba9051248a76b207",
    "10-42-70/15/15": "b82d24b639e692fb",
    "10-42-80/20/0": "be62621a149440cb",
    "37-0-70/15/15": "3c00845d4314f762",
    "37-0-80/20/0": "1b1547d407ba24da",
    "37-1-70/15/15": "eb1918cb8c61e245",
    "37-1-80/20/0": "a6239eb2ea438823",
    "37-7-70/15/15": "c4060498b5877e49",
    "37-7-80/20/0": "27d4942ec29f84fe",
    "37-42-70/15/15": "653081a1397ff0aa",
    "37-42-80/20/0": "4e45919d69c484c9",
    "100-0-70/15/15": "e247b371343ba4b5",
    "100-0-80/20/0": "f69bbabb6102aeb6",
    "100-1-70/15/15": "bba9c34afec83b70",
    "100-1-80/20/0": "675e1d8f125f6312",
    "100-7-70/15/15": "31a15b5ad0a9c9be",
    "100-7-80/20/0": "3ba0e2ac164b32c7",
    "100-42-70/15/15": "ee510b2492ea3246",
    "100-42-80/20/0": "88e32cbf8f570620",
}

#: ``"{n}-{seed}-{folds}-{val_fraction}"`` -> digests of the old ``patient_folds`` for fold 0, 1, ...
LIDC_FOLDS = {
    "100-0-5-0.15": [
        "6f9f5a04394350b6",
        "e8e8bc9645de6936",
        "07bb59e1a52afc10",
        "1b55609408647122",
        "a4eb3bf285c15f31",
    ],
    "100-3-5-0.15": [
        "6cc99ae83c06fe03",
        "163bdf1bcdf97b91",
        "0889bc1af6333a71",
        "c4597d62ec99a4be",
        "2727509af49caf66",
    ],
    "37-1-5-0.15": ["14f96f011b6cc12d", "891dd5440d8382eb", "651c22e82c9e26cd", "13df651dce68a002", "da65470a2e6eed3a"],
    "10-0-3-0.2": ["3db94c57ac27e631", "ae9b8f3f32c2607b", "97728831ab22f0bc"],
    "37-2-4-0.0": ["d979aeff2198813e", "2d8d004cd50e74b3", "7c9bb04c4a1e1f66", "2ff4a182f72f85b0"],
}

#: ``"{n}-{seed}"`` -> digest of the old MIMIC ``split_patients(mimic_patients(n), seed)`` (patients in order).
MIMIC_SPLITS = {
    "82-0": "be116a1b1bd23395",
    "82-1": "8524e30b7aadb1ce",
    "82-2": "29f2154488a33531",
    "82-3": "9ab1b62f25a3d900",
    "82-4": "fd5554940e08fcff",
    "82-5": "f7aa49556bcfa303",
    "82-6": "1ba9a2cec8758cf4",
    "82-7": "ce97d413c4fbb4ce",
    "82-8": "a2274cf0efbd5ef6",
    "82-9": "65a113f7ec59a434",
    "82-10": "052e920440b45b1e",
    "82-11": "8f885859e84a4b04",
    "82-12": "6bd813f8862c1ac4",
    "82-13": "b41d5086a25199f8",
    "82-14": "742b176d3b7e37ee",
    "82-15": "9b955a893ee18172",
    "82-16": "083dad03d24d7f5d",
    "82-17": "5c8f3d0b42201b28",
    "82-18": "3f38df98751b852e",
    "82-19": "abf1539aa8a0a165",
    "82-None": "db511382e23fc7ce",
    "151-0": "7d4c373b1a4f8546",
    "151-1": "1284815bbdb23d4e",
    "151-2": "93f1b679feca2f44",
    "151-3": "74cc0f49a9cd8ebc",
    "151-4": "cd031ab8d5eb36e9",
    "151-None": "8f166d068422520e",
    "5-0": "0a8441ec32ad6144",
    "5-1": "3ec058adf6bc4220",
    "5-None": "89cb6676696f8da7",
}


def lidc_records(n: int) -> list[dict]:
    """Patients ``P000``.. with 1-3 nodules each, the nodules interleaved (record order matters)."""
    return [{"patient_id": f"P{i:03d}", "nodule": k} for k in range(3) for i in range(n) if k <= i % 3]


def lidc_patients(n: int) -> list[str]:
    """What LIDC passes to the splitter: the sorted unique patient ids."""
    return sorted({r["patient_id"] for r in lidc_records(n)})


def mimic_patients(n: int) -> list[str]:
    """Unique subject ids in a fixed, unsorted file order."""
    return [str(10000 + (i * 7919) % 100003) for i in range(1, n + 1)]


def _digest(splits: dict[str, list]) -> str:
    text = "|".join(
        f"{name}:" + ",".join(f"{m['patient_id']}/{m['nodule']}" if isinstance(m, dict) else m for m in splits[name])
        for name in ("train", "val", "test")
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize("case", sorted(LIDC_SPLITS))
def test_seeded_split_reproduces_the_lidc_split(case):
    n, seed, fractions = case.split("-")
    records = lidc_records(int(n))
    patients = split_patients(lidc_patients(int(n)), LIDC_FRACTIONS[fractions], int(seed), require_nonempty=False)
    assert _digest(assign_records(records, patients)) == LIDC_SPLITS[case]


@pytest.mark.parametrize("case", sorted(LIDC_FOLDS))
def test_folds_reproduce_the_lidc_cross_validation(case):
    n, seed, folds, val_fraction = case.split("-")
    records = lidc_records(int(n))
    for fold, expected in enumerate(LIDC_FOLDS[case]):
        patients = patient_folds(lidc_patients(int(n)), int(folds), fold, float(val_fraction), int(seed))
        assert _digest(assign_records(records, patients)) == expected, f"fold {fold}"


@pytest.mark.parametrize("case", sorted(MIMIC_SPLITS))
def test_floor_python_split_reproduces_the_mimic_split(case):
    n, seed = case.split("-")
    splits = split_patients(
        mimic_patients(int(n)),
        SAFEDRUG_FRACTIONS,
        None if seed == "None" else int(seed),
        rounding="floor",
        shuffle="python",
    )
    assert list(splits) == ["train", "test", "val"]
    assert _digest(splits) == MIMIC_SPLITS[case]


def test_literal_splits_a_reader_can_check():
    lidc = split_patients(lidc_patients(10), LIDC_FRACTIONS["70/15/15"], seed=0)
    assert sorted(lidc["val"]) == ["P000"] and sorted(lidc["test"]) == ["P001", "P008"]
    fold0 = patient_folds(lidc_patients(10), folds=3, fold=0, val_fraction=0.2, seed=0)
    assert sorted(fold0["test"]) == ["P001", "P004", "P007", "P009"] and fold0["val"] == ["P000"]
    mimic = split_patients(mimic_patients(82), SAFEDRUG_FRACTIONS, seed=0, rounding="floor", shuffle="python")
    assert mimic["test"] == [
        "95078",
        "55483",
        "84215",
        "58427",
        "45533",
        "69290",
        "49595",
        "82184",
        "65433",
        "26751",
        "60458",
        "71321",
        "12944",
        "64315",
    ]
    assert (
        split_patients(mimic_patients(82), SAFEDRUG_FRACTIONS, None, rounding="floor")["train"]
        == mimic_patients(82)[:54]
    )


def test_floor_of_cumulative_fractions_is_the_safedrug_rule():
    for n in range(501):
        n_train = int(n * 2 / 3)  # SafeDrug: two thirds train, the rest halved into test, then validation
        n_test = int((n - n_train) / 2)
        splits = split_patients(
            [f"S{i}" for i in range(n)], SAFEDRUG_FRACTIONS, None, rounding="floor", require_nonempty=False
        )
        sizes = [len(splits[name]) for name in ("train", "test", "val")]
        assert sizes == [n_train, n_test, n - n_train - n_test], f"n={n}"


def test_floor_is_exact_where_float_sums_fall_short():
    assert 18 * (2 / 3 + 1 / 6) < 15 and sum(SAFEDRUG_FRACTIONS.values()) < 1  # the float traps
    patients = [f"S{i:02d}" for i in range(18)]
    splits = split_patients(patients, SAFEDRUG_FRACTIONS, None, rounding="floor")
    assert splits == {"train": patients[:12], "test": patients[12:15], "val": patients[15:]}


@pytest.mark.parametrize(
    ("n", "seed", "rounding", "shuffle"),
    list(itertools.product((1, 7, 50), (None, 0, 3), ("round", "floor"), ("numpy", "python"))),
)
def test_every_patient_lands_in_exactly_one_split(n, seed, rounding, shuffle):
    patients = [f"P{i}" for i in range(n)]
    splits = split_patients(
        patients, LIDC_FRACTIONS["70/15/15"], seed, rounding=rounding, shuffle=shuffle, require_nonempty=False
    )
    check_patient_disjoint(splits)
    assert sorted(itertools.chain.from_iterable(splits.values())) == sorted(patients)


@pytest.mark.parametrize(("n", "folds", "val_fraction"), [(5, 5, 0.15), (37, 5, 0.15), (100, 4, 0.0), (11, 2, 0.5)])
def test_folds_test_every_patient_once_and_stay_disjoint(n, folds, val_fraction):
    patients = [f"P{i:03d}" for i in range(n)]
    tested = []
    for fold in range(folds):
        splits = patient_folds(patients, folds, fold, val_fraction, seed=1)
        check_patient_disjoint(splits)
        assert sorted(itertools.chain.from_iterable(splits.values())) == patients
        assert len(splits["val"]) == round(val_fraction * (n - len(splits["test"])))
        tested += splits["test"]
    assert sorted(tested) == patients
    assert {len(patient_folds(patients, folds, f, val_fraction)["test"]) for f in range(folds)} <= {
        n // folds,
        -(-n // folds),
    }


def test_assign_records_keeps_record_order_and_rejects_unknown_patients():
    records = lidc_records(6)
    splits = assign_records(records, {"train": ["P000", "P002", "P004"], "test": ["P001", "P003", "P005"]})
    assert [(r["patient_id"], r["nodule"]) for r in splits["test"]] == [
        ("P001", 0),
        ("P003", 0),
        ("P005", 0),
        ("P001", 1),
        ("P005", 1),
        ("P005", 2),
    ]
    with pytest.raises(ValueError, match=r"record 0: patient 'P000' \(patient_id\) is in no split"):
        assign_records(records, {"train": ["P001"]})
    admissions = [{"subject_id": "7"}, {"subject_id": "9"}]
    assert assign_records(admissions, {"train": ["9"], "val": ["7"], "test": []}, key="subject_id") == {
        "train": [admissions[1]],
        "val": [admissions[0]],
        "test": [],
    }


def test_check_patient_disjoint_names_the_splits_the_count_and_five_patients():
    check_patient_disjoint({"train": ["a", "b"], "val": ["c"], "test": []})
    shared = [f"P{i}" for i in range(7)]
    with pytest.raises(
        ValueError,
        match=r"splits 'train' and 'test' share 7 patients \(e.g. \['P0', 'P1', 'P2', 'P3', "
        r"'P4'\]\)",
    ):
        check_patient_disjoint({"train": [*shared, "x"], "val": ["y"], "test": shared})


def test_split_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match=r"split 'test' is empty: 3 patients cannot fill fractions"):
        split_patients(lidc_patients(3), LIDC_FRACTIONS["70/15/15"], seed=0)
    assert split_patients(lidc_patients(3), LIDC_FRACTIONS["80/20/0"], seed=0)["test"] == []  # fraction 0 may be empty
    with pytest.raises(ValueError, match="must be >= 0 and sum to 1"):
        split_patients(["a", "b"], {"train": 0.7, "test": 0.2})
    with pytest.raises(ValueError, match="must be >= 0 and sum to 1"):
        split_patients(["a", "b"], {"train": 1.2, "test": -0.2})
    with pytest.raises(ValueError, match=r"1 patient ids are listed more than once \(e.g. \['a'\]\)"):
        split_patients(["a", "b", "a"], {"train": 1.0})
    with pytest.raises(ValueError, match="rounding must be 'round' or 'floor'"):
        split_patients(["a"], {"train": 1.0}, rounding="ceil")
    with pytest.raises(ValueError, match="shuffle must be 'numpy' or 'python'"):
        split_patients(["a"], {"train": 1.0}, shuffle="torch")


@pytest.mark.parametrize(
    ("folds", "fold", "val_fraction", "n", "message"),
    [
        (1, 0, 0.15, 10, "need folds >= 2 and 0 <= fold < folds, got folds=1, fold=0"),
        (5, 5, 0.15, 10, "need folds >= 2 and 0 <= fold < folds, got folds=5, fold=5"),
        (5, -1, 0.15, 10, "got folds=5, fold=-1"),
        (5, 0, 1.0, 10, r"val_fraction must be in \[0, 1\), got 1.0"),
        (5, 0, -0.1, 10, r"val_fraction must be in \[0, 1\)"),
        (5, 0, 0.15, 4, "4 patients cannot fill 5 folds"),
    ],
)
def test_fold_errors_say_what_is_wrong(folds, fold, val_fraction, n, message):
    with pytest.raises(ValueError, match=message):
        patient_folds([f"P{i}" for i in range(n)], folds, fold, val_fraction)
