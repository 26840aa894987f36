"""The paper's datasets on tiny copies of their exact on-disk layouts, built in tmp_path.

Every registered paper dataset has a builder below (a test fails if one is missing), so a new
dataset gets the same contract tests: split counts, class names, the label of a known file,
train/val partitioning trainval, decoding to a tensor, a clear error on a bad root.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dataset_fixtures import (
    BUILDERS,
    PAPER_12,
    _cifar_rows,
    _pickle,
    build_birdsnap,
    build_cifar10,
    build_food101,
    build_image_folder,
    image,
)

from sparse_transfer.data.paper import PAPER_DATASETS, DatasetLayoutError, paper_transform
from sparse_transfer.models.catalog import Preprocessing

# the Birdsnap fixture lists one image Flickr "lost"; one test below checks the warning
pytestmark = pytest.mark.filterwarnings("ignore:birdsnap .* not on disk")


def test_every_registered_dataset_has_a_fixture_and_the_paper_has_twelve():
    assert set(PAPER_DATASETS.names()) == set(BUILDERS)
    assert len(PAPER_12) == 12
    paper_names = {PAPER_DATASETS.get(n).paper_name for n in PAPER_12}
    assert paper_names == {
        "aircraft", "birds", "caltech101", "caltech256", "cars", "cifar10", "cifar100",
        "dtd", "flowers", "food101", "pets", "SUN",
    }  # fmt: skip


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_splits_classes_and_a_known_label(name, tmp_path):
    expected = BUILDERS[name](tmp_path)
    dataset = PAPER_DATASETS.get(name)
    for split, count in expected.counts.items():
        opened = dataset.open(tmp_path, split)
        assert len(opened) == count, split
        assert opened.classes == expected.classes, split
        assert set(opened.targets) <= set(range(len(expected.classes)))
    split, relative, label = expected.known
    samples = dataset.open(tmp_path, split).samples
    if relative:
        assert dict(samples)[tmp_path / relative] == label
    else:  # CIFAR keeps pixels inline: the known sample is the split's first row
        assert samples[0][1] == label


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_train_and_val_partition_trainval(name, tmp_path):
    BUILDERS[name](tmp_path)
    dataset = PAPER_DATASETS.get(name)
    trainval = dataset.open(tmp_path, "trainval").samples
    train = dataset.open(tmp_path, "train").samples
    val = dataset.open(tmp_path, "val").samples
    assert len(train) + len(val) == len(trainval)
    key = lambda s: s[0].tobytes() if isinstance(s[0], np.ndarray) else s[0]  # noqa: E731
    assert {key(s) for s in train}.isdisjoint({key(s) for s in val})
    assert {key(s) for s in train + val} == {key(s) for s in trainval}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_items_decode_to_normalised_rgb_tensors(name, tmp_path):
    BUILDERS[name](tmp_path)
    test = paper_transform(Preprocessing(), train=False)
    image_tensor, label = PAPER_DATASETS.get(name).open(tmp_path, "test", test)[0]
    assert image_tensor.shape == (3, 224, 224) and image_tensor.dtype == torch.float32
    assert isinstance(label, int)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_a_wrong_root_names_the_dataset_the_layout_and_what_is_missing(name, tmp_path):
    with pytest.raises(DatasetLayoutError) as err:
        PAPER_DATASETS.get(name).open(tmp_path, "test")
    message = str(err.value)
    assert repr(name) in message and "expected under the root" in message
    assert "missing:" in message and str(tmp_path) in message


def test_without_an_official_val_every_fifth_image_of_a_class_is_val(tmp_path):
    build_image_folder(tmp_path)  # 6 training images per class
    val = PAPER_DATASETS.get("image_folder").open(tmp_path, "val").samples
    assert val == [(tmp_path / "train/cat/4.png", 0), (tmp_path / "train/dog/4.png", 1)]


def test_a_listed_image_missing_from_disk_is_named(tmp_path):
    build_food101(tmp_path)
    (tmp_path / "food-101/images/waffles/103.jpg").unlink()
    with pytest.raises(DatasetLayoutError, match=r"1 listed images: .*waffles/103\.jpg"):
        PAPER_DATASETS.get("food101").open(tmp_path, "test")


def test_birdsnap_skips_images_flickr_lost_with_a_warning(tmp_path):
    build_birdsnap(tmp_path)
    with pytest.warns(UserWarning, match="1 listed images are not on disk"):
        PAPER_DATASETS.get("birdsnap").open(tmp_path, "trainval")


def test_birdsnap_reads_the_papers_prepared_copy_as_an_image_folder(tmp_path):
    build_image_folder(tmp_path)
    opened = PAPER_DATASETS.get("birdsnap").open(tmp_path, "test")
    assert opened.classes == ["cat", "dog"] and len(opened) == 4


def test_image_folder_refuses_different_classes_in_train_and_test(tmp_path):
    build_image_folder(tmp_path)
    image(tmp_path / "test/emu/0.png")
    with pytest.raises(DatasetLayoutError, match=r"only in test \['emu'\]"):
        PAPER_DATASETS.get("image_folder").open(tmp_path, "test")


def test_cifar_pixels_are_the_batch_rows_as_hwc(tmp_path):
    build_cifar10(tmp_path)
    source, _ = PAPER_DATASETS.get("cifar10").open(tmp_path, "test").samples[0]
    row = _cifar_rows([9, 0, 1], 0)[0]
    assert np.array_equal(source, row.reshape(3, 32, 32).transpose(1, 2, 0))


def test_a_cifar_batch_that_would_run_code_is_refused_not_executed(tmp_path):
    build_cifar10(tmp_path)
    created = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(created), "w"))

    _pickle(tmp_path / "cifar-10-batches-py/test_batch", {"labels": [0], "data": Payload()})
    with pytest.raises(DatasetLayoutError, match="not plain data"):
        PAPER_DATASETS.get("cifar10").open(tmp_path, "test")
    assert not created.exists()


def test_an_unknown_split_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown split"):
        PAPER_DATASETS.get("cars").open(tmp_path, "validation")


@pytest.mark.parametrize(
    ("interpolation", "mode"), [("bilinear", "BILINEAR"), ("bicubic", "BICUBIC")]
)
def test_transforms_follow_the_upstream_preprocessing(interpolation, mode):
    from torchvision import transforms as T

    pre = Preprocessing(interpolation=interpolation, mean=(0.5, 0.5, 0.5), std=(0.25,) * 3)
    train = paper_transform(pre, train=True).transforms
    test = paper_transform(pre, train=False).transforms
    assert isinstance(train[0], T.RandomResizedCrop) and train[0].size == (224, 224)
    assert isinstance(train[1], T.RandomHorizontalFlip)
    assert isinstance(test[0], T.Resize) and test[0].size == 256
    assert isinstance(test[1], T.CenterCrop) and test[1].size == (224, 224)
    assert train[0].interpolation.name == mode and test[0].interpolation.name == mode
    assert list(test[-1].mean) == [0.5] * 3 and list(test[-1].std) == [0.25] * 3


# --- normalization by transfer mode ----------------------------------------------------------

# Two entries written out from the authors' utils/datasets.py, so a wrong edit of the data fails.
AUTHORS_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "aircraft": ((0.4892, 0.5159, 0.5356), (0.2275, 0.2200, 0.2476)),
}


@pytest.mark.parametrize("name", PAPER_12)
def test_every_paper_dataset_carries_its_own_statistics_with_their_source(name):
    stats = PAPER_DATASETS.get(name).stats
    assert stats is not None and len(stats.mean) == len(stats.std) == 3
    assert "IST-DASLab/sparse-imagenet-transfer" in stats.source
    assert all(0 < v < 1 for v in (*stats.mean, *stats.std))
    if name in AUTHORS_STATS:
        assert (stats.mean, stats.std) == AUTHORS_STATS[name]
    assert PAPER_DATASETS.get("image_folder").stats is None  # unknown: the upstream's


@pytest.mark.parametrize("name", ["cifar10", "aircraft"])
@pytest.mark.parametrize("mode", ["full", "prune", "linear"])
def test_the_transform_normalizes_by_transfer_mode(name, mode, tmp_path):
    """The transform a trial's batch source really builds: full finetuning (and prune) with
    the dataset's mean/std, linear finetuning with the upstream model's (ImageNet's)."""
    from sparse_transfer.models.catalog import IMAGENET_MEAN, IMAGENET_STD
    from sparse_transfer.transfer import TransferJob

    BUILDERS[name](tmp_path)
    job = TransferJob(tmp_path / "unused.pt", name, mode, "final", {}, 0, data_root=tmp_path)
    source = job.source({"interpolation": "bilinear"})  # a published model's: ImageNet stats
    for train in (True, False):
        normalize = source.transform(train).preprocessing
        if mode == "linear":
            assert (tuple(normalize.mean), tuple(normalize.std)) == (IMAGENET_MEAN, IMAGENET_STD)
        else:
            assert (tuple(normalize.mean), tuple(normalize.std)) == AUTHORS_STATS[name]


def test_birdsnaps_official_split_is_a_variant_that_never_passes_for_the_papers(tmp_path):
    """The reader falls back to the official test split: results carry
    `birdsnap:official-split`, so they never join the paper's Birdsnap numbers."""
    from sparse_transfer.transfer import TransferJob

    official, prepared = tmp_path / "official", tmp_path / "prepared"
    build_birdsnap(official)
    build_image_folder(prepared)  # the paper's prepared copy: train/<species>, test/<species>
    birdsnap = PAPER_DATASETS.get("birdsnap")
    assert birdsnap.variant(official) == "official-split" and birdsnap.variant(prepared) is None
    assert birdsnap.label(official) == "birdsnap:official-split"
    assert birdsnap.label(prepared) == "birdsnap"
    for root, label in ((official, "birdsnap:official-split"), (prepared, "birdsnap")):
        job = TransferJob(tmp_path / "x.pt", "birdsnap", "full", "final", {}, 0, data_root=root)
        assert job.dataset_label() == label
    assert PAPER_DATASETS.get("cifar10").label(official) == "cifar10"  # no variants
