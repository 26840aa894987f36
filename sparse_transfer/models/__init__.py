"""Architecture builders and upstream checkpoints."""

from sparse_transfer.models import mobilenetv1 as _mobilenetv1  # noqa: F401  (registers)
from sparse_transfer.models import quickstart_cnn as _quickstart_cnn  # noqa: F401  (registers)
from sparse_transfer.models import resnet as _resnet  # noqa: F401  (registers)
from sparse_transfer.models.checkpoint import UpstreamCheckpoint, load_upstream, save_upstream
from sparse_transfer.models.registry import ARCHS, Arch, replace_classifier

__all__ = [
    "ARCHS",
    "Arch",
    "UpstreamCheckpoint",
    "load_upstream",
    "replace_classifier",
    "save_upstream",
]
