"""The paper's transforms, as a function of the upstream checkpoint's preprocessing data.

train: RandomResizedCrop(input_size) + horizontal flip; test: Resize(resize_size) +
CenterCrop(input_size); both then ToTensor + Normalize(mean, std). The interpolation is the
upstream entry's: bicubic for RigL (trained in TensorFlow), bilinear for the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sparse_transfer.models.catalog import Preprocessing

if TYPE_CHECKING:
    from torchvision.transforms import Compose

__all__ = ["paper_transform"]


def paper_transform(preprocessing: Preprocessing, *, train: bool) -> Compose:
    from torchvision import transforms as T

    modes = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}
    mode = modes[preprocessing.interpolation]
    if train:
        resize = [
            T.RandomResizedCrop(preprocessing.input_size, interpolation=mode),
            T.RandomHorizontalFlip(),
        ]
    else:
        resize = [
            T.Resize(preprocessing.resize_size, interpolation=mode),
            T.CenterCrop(preprocessing.input_size),
        ]
    return T.Compose(
        [*resize, T.ToTensor(), T.Normalize(list(preprocessing.mean), list(preprocessing.std))]
    )
