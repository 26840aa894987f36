"""Any dataset laid out as `root/train/<class>/*` and `root/test/<class>/*`.

This is also the layout of the copies the paper's code read for Birdsnap, Cars, Flowers, Pets
and SUN397 (prepared by Salman et al.'s robust-models-transfer), so such a copy reproduces
their exact split.
"""

from __future__ import annotations

from pathlib import Path

from sparse_transfer.data.paper.registry import (
    PAPER_DATASETS,
    DatasetLayoutError,
    PaperDataset,
    Samples,
    require,
)

NAME = "image_folder"
LAYOUT = """\
  train/<class name>/<image>   (jpg, png, ...)
  test/<class name>/<image>    (the same class folders)"""


def read_image_folder(
    name: str, root: Path, split: str, layout: str = LAYOUT
) -> tuple[list[str], Samples]:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    require(name, root, layout, "train", "test")
    classes, class_to_idx = find_classes(str(root / "train"))
    test_classes, _ = find_classes(str(root / "test"))
    if set(test_classes) != set(classes):
        raise DatasetLayoutError(
            f"dataset {name!r}: {root}/train and {root}/test hold different classes: "
            f"only in train {sorted(set(classes) - set(test_classes))}, "
            f"only in test {sorted(set(test_classes) - set(classes))}"
        )
    folder = root / ("test" if split == "test" else "train")  # train/ holds trainval
    found = make_dataset(str(folder), class_to_idx, IMG_EXTENSIONS, allow_empty=True)
    return classes, [(Path(path), label) for path, label in found]


def read(root: Path, split: str) -> tuple[list[str], Samples]:
    return read_image_folder(NAME, root, split)


PAPER_DATASETS.add(
    NAME,
    PaperDataset(
        NAME, 0, LAYOUT, read, "", description="generic: root/train/<class>, root/test/<class>"
    ),
)
