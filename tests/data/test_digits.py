"""The offline digits world: documented classes, disjoint splits, upstream kept apart."""

from __future__ import annotations

import pytest
import torch

from sparse_transfer.data import DATASETS, SPLITS

DOWNSTREAM = ("digits_5to9", "digits_5to9_parity")
ALL = ("digits_0to4", *DOWNSTREAM)


def rows(images: torch.Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in images}


def test_the_three_datasets_are_registered():
    assert set(ALL) <= set(DATASETS.names())


@pytest.mark.parametrize(
    ("name", "classes"), [("digits_0to4", 5), ("digits_5to9", 5), ("digits_5to9_parity", 2)]
)
def test_documented_classes(name, classes):
    dataset = DATASETS.get(name)
    assert dataset.num_classes == classes
    for split in SPLITS:
        images, labels = dataset.load(split)
        assert images.shape[1:] == (1, 8, 8) and images.dtype == torch.float32
        assert labels.dtype == torch.int64 and len(labels) == len(images)
        assert set(labels.tolist()) == set(range(classes)), split
        assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0


def test_downstream_labels_are_the_same_images_relabelled():
    # digits 5..9 -> 0..4, parity = digit % 2, so label 0 of digits_5to9 (a 5) is odd (1)
    images, labels = DATASETS.get("digits_5to9").load("trainval")
    parity_images, parity = DATASETS.get("digits_5to9_parity").load("trainval")
    assert torch.equal(images, parity_images)
    assert torch.equal(parity, (labels + 5) % 2)


def test_digits_0to4_labels_are_the_digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    digit_of = {
        (image / 16.0).astype("float32").tobytes(): int(t)
        for image, t in zip(bunch.images, bunch.target, strict=True)
    }
    for name, to_label in [
        ("digits_0to4", lambda d: d),
        ("digits_5to9", lambda d: d - 5),
        ("digits_5to9_parity", lambda d: d % 2),
    ]:
        images, labels = DATASETS.get(name).load("train")
        truth = [to_label(digit_of[image.numpy().tobytes()]) for image in images]
        assert labels.tolist() == truth, name


@pytest.mark.parametrize("name", ALL)
def test_splits_partition_the_data(name):
    load = DATASETS.get(name).load
    train, val, trainval, test = (rows(load(split)[0]) for split in SPLITS)
    n_train, n_val = len(load("train")[1]), len(load("val")[1])
    assert len(train) == n_train and len(val) == n_val, "no image twice within a split"
    assert not train & val
    assert train | val == trainval
    assert not trainval & test
    assert len(test) > 0 and len(val) > 0


def test_upstream_images_are_disjoint_from_downstream():
    upstream = set().union(*(rows(DATASETS.get("digits_0to4").load(s)[0]) for s in SPLITS))
    for name in DOWNSTREAM:
        downstream = set().union(*(rows(DATASETS.get(name).load(s)[0]) for s in SPLITS))
        assert downstream and not upstream & downstream, name


@pytest.mark.parametrize("name", ALL)
def test_loading_is_deterministic(name):
    for split in SPLITS:
        a_x, a_y = DATASETS.get(name).load(split)
        b_x, b_y = DATASETS.get(name).load(split)
        assert torch.equal(a_x, b_x) and torch.equal(a_y, b_y)


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="valid"):
        DATASETS.get("digits_5to9").load("validation")


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(KeyError, match="digits_5to9_parity"):
        DATASETS.get("cifar10")
