"""Tiny copies of the paper datasets' exact on-disk layouts, built under a root.

Each builder writes one dataset's real layout and says what a reader should find; the dataset
contract tests (tests/data/test_paper_datasets.py) and the paper-spec dry run
(tests/sweep/test_paper_dry_run.py) both build from here.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat


@dataclass
class Expected:
    classes: list[str]
    counts: dict[str, int]  # split -> images
    known: tuple[str, str, int]  # (split, path relative to root, label)


def image(path: Path, value: int = 128, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, 7)
    Image.new(mode, (8, 6), color).save(path)


def lines(path: Path, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{row}\n" for row in rows))


# --- builders: each writes the dataset's real layout under root and says what to expect --


def build_aircraft(root: Path) -> Expected:
    data = root / "fgvc-aircraft-2013b/data"
    variants = ["707-320", "A300B4", "Cessna 172"]
    lines(data / "variants.txt", variants)
    splits = {
        "train": ["1000001 707-320", "1000002 A300B4", "1000003 Cessna 172"],
        "val": ["1000004 707-320", "1000005 Cessna 172"],
        "test": ["1000006 A300B4", "1000007 707-320"],
    }
    splits["trainval"] = splits["train"] + splits["val"]
    for split, rows in splits.items():
        lines(data / f"images_variant_{split}.txt", rows)
        for row in rows:
            image(data / "images" / f"{row.split()[0]}.jpg")
    return Expected(
        variants,
        {"trainval": 5, "test": 2, "train": 3, "val": 2},
        ("trainval", "fgvc-aircraft-2013b/data/images/1000005.jpg", 2),
    )


def build_birdsnap(root: Path) -> Expected:
    lines(
        root / "species.txt",
        [
            "id\tcommon\tscientific\tdir",
            "1\tAcadian Flycatcher\tEmpidonax virescens\tAcadian_Flycatcher",
            "2\tBlue Jay\tCyanocitta cristata\tBlue_Jay",
            "3\tWood Duck\tAix sponsa\tWood_Duck",
        ],
    )
    rows, test = [], []
    for i in range(9):
        species = ["Acadian_Flycatcher", "Blue_Jay", "Wood_Duck"][i % 3]
        path = f"{species}/{100 + i}.jpg"
        rows.append(f"http://x/{i}.jpg\tmd5\t{path}\t{i % 3 + 1}\t1\t2\t3\t4")
        if i < 8:  # image 8 was never downloaded: listed, absent, skipped
            image(root / "download/images" / path)
        if i in (0, 4):
            test.append(path)
    lines(root / "images.txt", ["url\tmd5\tpath\tspecies_id\tbb_x1\tbb_y1\tbb_x2\tbb_y2", *rows])
    lines(root / "test_images.txt", ["path", *test])
    return Expected(
        ["Acadian Flycatcher", "Blue Jay", "Wood Duck"],
        {"trainval": 6, "test": 2},
        ("test", "download/images/Blue_Jay/104.jpg", 1),
    )


def build_caltech101(root: Path) -> Expected:
    base = root / "caltech101/101_ObjectCategories"
    for name, count in (("BACKGROUND_Google", 2), ("Faces", 32), ("accordion", 31)):
        for i in range(1, count + 1):
            image(base / name / f"image_{i:04d}.jpg", i, mode="L" if name == "Faces" else "RGB")
    return Expected(
        ["Faces", "accordion"],
        {"trainval": 60, "test": 3},
        ("test", "caltech101/101_ObjectCategories/accordion/image_0031.jpg", 1),
    )


def build_caltech256(root: Path) -> Expected:
    base = root / "caltech256/256_ObjectCategories"
    for number, name, count in (("001", "ak47", 61), ("257", "clutter", 62)):
        for i in range(1, count + 1):
            image(base / f"{number}.{name}" / f"{number}_{i:04d}.jpg", i)
    (base / "001.ak47" / "notes.txt").write_text("not an image")
    return Expected(
        ["001.ak47", "257.clutter"],
        {"trainval": 120, "test": 3},
        ("trainval", "caltech256/256_ObjectCategories/257.clutter/257_0060.jpg", 1),
    )


def _cars_annotations(path: Path, rows: list[tuple[int, str]]) -> None:
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    table = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, (klass, fname) in enumerate(rows):
        table[0, i] = (1, 2, 7, 5, klass, fname)
    savemat(path, {"annotations": table})


def build_cars(root: Path) -> Expected:
    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Volvo 240 Sedan 1993"]
    savemat(base / "devkit/cars_meta.mat", {"class_names": np.array([names], dtype=object)})
    train = [(1, "00001.jpg"), (3, "00002.jpg"), (2, "00003.jpg"), (3, "00004.jpg")]
    test = [(2, "00001.jpg"), (1, "00002.jpg")]
    _cars_annotations(base / "devkit/cars_train_annos.mat", train)
    _cars_annotations(base / "cars_test_annos_withlabels.mat", test)
    for folder, rows in (("cars_train", train), ("cars_test", test)):
        for _, fname in rows:
            image(base / folder / fname)
    return Expected(
        names, {"trainval": 4, "test": 2}, ("trainval", "stanford_cars/cars_train/00002.jpg", 2)
    )


def _pickle(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _cifar_rows(labels: list[int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (len(labels), 3072), dtype=np.uint8)


def build_cifar10(root: Path) -> Expected:
    base = root / "cifar-10-batches-py"
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    _pickle(base / "batches.meta", {"label_names": names, "num_vis": 3072})
    for i in range(1, 6):
        labels = [i, (i + 3) % 10]
        _pickle(base / f"data_batch_{i}", {"labels": labels, "data": _cifar_rows(labels, i)})
    _pickle(base / "test_batch", {"labels": [9, 0, 1], "data": _cifar_rows([9, 0, 1], 0)})
    return Expected(names, {"trainval": 10, "test": 3}, ("test", "", 9))


def build_cifar100(root: Path) -> Expected:
    base = root / "cifar-100-python"
    names = [f"class_{i:02d}" for i in range(100)]
    _pickle(base / "meta", {"fine_label_names": names, "coarse_label_names": ["a"] * 20})
    train = {"fine_labels": [5, 99, 42], "coarse_labels": [0, 1, 2]}
    _pickle(base / "train", {**train, "data": _cifar_rows([5, 99, 42], 1)})
    _pickle(base / "test", {"fine_labels": [77], "data": _cifar_rows([77], 2)})
    return Expected(names, {"trainval": 3, "test": 1}, ("test", "", 77))


def build_dtd(root: Path) -> Expected:
    base = root / "dtd/dtd"
    files = {
        "train1": ["banded/banded_0001.jpg", "zigzagged/zigzagged_0001.jpg"],
        "val1": ["blotchy/blotchy_0001.jpg", "banded/banded_0002.jpg"],
        "test1": ["zigzagged/zigzagged_0002.jpg", "blotchy/blotchy_0002.jpg"],
    }
    for split, rows in files.items():
        lines(base / "labels" / f"{split}.txt", rows)
        for row in rows:
            image(base / "images" / row)
    return Expected(
        ["banded", "blotchy", "zigzagged"],
        {"trainval": 4, "test": 2, "train": 2, "val": 2},
        ("trainval", "dtd/dtd/images/blotchy/blotchy_0001.jpg", 1),
    )


def build_flowers102(root: Path) -> Expected:
    from torchvision.datasets import Flowers102

    base = root / "flowers-102"
    labels = [1, 1, 2, 102, 2, 1, 102]  # image_00001 .. image_00007, classes 1-based
    for i in range(1, len(labels) + 1):
        image(base / "jpg" / f"image_{i:05d}.jpg", i)
    savemat(base / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    sets = {"trnid": [1, 4], "valid": [2, 6], "tstid": [3, 5, 7]}
    savemat(base / "setid.mat", {k: np.array([v], dtype=np.uint16) for k, v in sets.items()})
    return Expected(
        list(Flowers102.classes),
        {"trainval": 4, "test": 3, "train": 2, "val": 2},
        ("trainval", "flowers-102/jpg/image_00004.jpg", 101),
    )


def build_food101(root: Path) -> Expected:
    base = root / "food-101"
    classes = ["apple_pie", "baby_back_ribs", "waffles"]
    lines(base / "meta/classes.txt", classes)
    train = ["apple_pie/1005649", "waffles/101", "baby_back_ribs/7", "waffles/102"]
    test = ["apple_pie/2000", "waffles/103"]
    lines(base / "meta/train.txt", train)
    lines(base / "meta/test.txt", test)
    for row in train + test:
        image(base / "images" / f"{row}.jpg")
    return Expected(
        classes, {"trainval": 4, "test": 2}, ("trainval", "food-101/images/waffles/102.jpg", 2)
    )


def build_pets(root: Path) -> Expected:
    base = root / "oxford-iiit-pet"
    trainval = ["Abyssinian_1 1 1 1", "american_bulldog_10 2 2 1", "Abyssinian_2 1 1 1"]
    test = ["american_bulldog_11 2 2 1", "yorkshire_terrier_3 3 2 25"]
    trainval.append("yorkshire_terrier_1 3 2 25")
    lines(base / "annotations/trainval.txt", trainval)
    lines(base / "annotations/test.txt", test)
    for row in trainval + test:
        image(base / "images" / f"{row.split()[0]}.jpg")
    return Expected(
        ["Abyssinian", "American Bulldog", "Yorkshire Terrier"],
        {"trainval": 4, "test": 2},
        ("test", "oxford-iiit-pet/images/yorkshire_terrier_3.jpg", 2),
    )


def build_sun397(root: Path) -> Expected:
    lines(root / "SUN397/ClassName.txt", ["/a/abbey", "/b/bakery/shop", "/z/zoo"])
    train = ["/a/abbey/sun_aaa.jpg", "/b/bakery/shop/sun_bbb.jpg", "/z/zoo/sun_ccc.jpg"]
    test = ["/b/bakery/shop/sun_ddd.jpg", "/a/abbey/sun_eee.jpg"]
    lines(root / "Partitions/Training_01.txt", train)
    lines(root / "Partitions/Testing_01.txt", test)
    for row in train + test + ["/z/zoo/sun_unused.jpg"]:  # images outside partition 1 exist
        image(root / "SUN397" / row.lstrip("/"))
    return Expected(
        ["abbey", "bakery/shop", "zoo"],
        {"trainval": 3, "test": 2},
        ("test", "SUN397/b/bakery/shop/sun_ddd.jpg", 1),
    )


def build_image_folder(root: Path) -> Expected:
    for split, count in (("train", 6), ("test", 2)):
        for name in ("cat", "dog"):
            for i in range(count):
                image(root / split / name / f"{i}.png", i * 20)
    return Expected(["cat", "dog"], {"trainval": 12, "test": 4}, ("test", "test/dog/1.png", 1))


BUILDERS: dict[str, Callable[[Path], Expected]] = {
    name.removeprefix("build_"): fn for name, fn in globals().items() if name.startswith("build_")
}
PAPER_12 = [name for name in BUILDERS if name != "image_folder"]
