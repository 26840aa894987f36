"""The upstream checkpoints of the paper, as data (in the spirit of timm's pretrained configs).

Each entry says what a checkpoint is (architecture, pruning method, declared sparsity), where it
lives (`source`: a local path, `s3://`, `https://`, or None for "fill in"), how to read it
(`format`, `key_rules`), how to feed it (`preprocessing`) and which layer is its classifier.
Quirks are fields, never `if "rigl" in name:` in code.

Methods and sparsities are the paper's (Iofinova et al., CVPR 2022): the `(method, sparsity)`
pairs of its raw results (sparse_transfer/reference/raw_results/*.csv, `model`/`sparsity`), with
`method` spelled as there so results join. `in_paper_results` is False for the entries beyond
those (GMP, the 98% AC/DC and WoodFisher models, torchvision's weights).

Sources: the authors published their converted files only as folder shares (`published_at`),
not as file URLs, so those sources are None until someone mirrors a file (to S3, say) and
fills in `source` and `sha256`. LTH-T was never published. Nothing here is ever downloaded
by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from sparse_transfer.models.formats import FORMATS
from sparse_transfer.models.keymap import AMC_MOBILENET_TO_OURS, KeyRule
from sparse_transfer.registry import Registry

__all__ = [
    "CATALOG",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MASK_TOLERANCE",
    "CatalogEntry",
    "Preprocessing",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# A stored mask (`_weight_mask`) may keep at most this fraction of the masked weights at exactly
# zero: a trained weight lands on 0.0 by chance only; more means a stale or foreign mask.
MASK_TOLERANCE = 0.001

RESNET50_CONVERTED = "https://seafile.ist.ac.at/d/91de9650cfb54b77b7d1/"
MOBILENET_CONVERTED = "https://seafile.ist.ac.at/d/48652b95fdd04bcd8bb6/"


@dataclass(frozen=True)
class Preprocessing:
    """How the upstream model saw images; downstream transforms follow it."""

    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: int = 224  # RandomResizedCrop (train) and CenterCrop (test) size
    resize_size: int = 256  # test: Resize(resize_size) then CenterCrop(input_size)


BICUBIC = Preprocessing(interpolation="bicubic")  # RigL: trained with TensorFlow's resizing


@dataclass(frozen=True)
class CatalogEntry:
    name: str  # "<arch>.<method slug>_<sparsity %>", e.g. "resnet50.acdc_95"
    arch: str  # the architecture family results are joined on ("resnet50")
    method: str  # as in the paper's raw results: "Dense", "AC/DC", "RigL ERK 5x", ...
    sparsity: float  # the paper's nominal label, as in its raw results (joins results)
    format: str
    # what the published file measures when its sparsity is learned, not set (STR); None: the
    # label is exact. Loading checks the file against this, within `sparsity_tolerance`.
    actual_sparsity: float | None = None
    # the registered architecture the weights run in, when the authors ran them in a variant
    # of `arch` (RigL: `resnet50_tf`); None: `arch` itself
    variant: str | None = None
    # the head full finetuning puts in place of the classifier, as the authors did: "linear"
    # (nn.Linear with bias, PyTorch's init) or "conv1x1" (bias-free, kaiming-normal fan-in)
    head: Literal["linear", "conv1x1"] = "linear"
    source: str | None = None  # local path, s3://, https://; None = "fill in"
    sha256: str | None = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    key_rules: tuple[KeyRule, ...] = ()
    classifier: str = "fc"
    num_classes: int = 1000
    # prunable layers left out of the measured sparsity (module-name prefixes)
    sparsity_excludes: tuple[str, ...] = ()
    sparsity_tolerance: float = 0.005  # |measured - expected_sparsity|, as a fraction
    mask_tolerance: float = MASK_TOLERANCE
    in_paper_results: bool = True
    published_at: str | None = None  # a page where the weights are published (not a file)
    notes: str = ""

    @property
    def needs_source(self) -> bool:
        return self.source is None

    @property
    def expected_sparsity(self) -> float:
        return self.sparsity if self.actual_sparsity is None else self.actual_sparsity

    @property
    def model_arch(self) -> str:
        """The registered architecture that is built for these weights."""
        return self.variant or self.arch


CATALOG: Registry[CatalogEntry] = Registry("catalog entry")

_SLUGS = {
    "Dense": "dense",
    "GMP": "gmp",
    "AC/DC": "acdc",
    "WoodFisher": "woodfisher",
    "RigL ERK 1x": "rigl_erk1x",
    "RigL ERK 5x": "rigl_erk5x",
    "STR": "str",
    "LTH-T": "ltht",
    "M-FAC": "mfac",
}


def entry_name(arch: str, method: str, sparsity: float) -> str:
    slug = _SLUGS[method]
    return f"{arch}.{slug}" if sparsity == 0 else f"{arch}.{slug}_{round(sparsity * 100)}"


def _add(arch: str, method: str, sparsity: float, fmt: str, **fields) -> None:
    """An entry whose key rules are its format's defaults (plus `extra_rules`)."""
    extra = fields.pop("extra_rules", ())
    entry = CatalogEntry(
        name=fields.pop("name", None) or entry_name(arch, method, sparsity),
        arch=arch,
        method=method,
        sparsity=sparsity,
        format=fmt,
        key_rules=(*FORMATS.get(fmt).rules, *extra),
        **fields,
    )
    CATALOG.add(entry.name, entry)


_R50 = {"published_at": RESNET50_CONVERTED}
_MBV1 = {"published_at": MOBILENET_CONVERTED}

# --- ResNet-50 ---------------------------------------------------------------------------
_add("resnet50", "Dense", 0.0, "ist-converted", **_R50)
for _s in (0.8, 0.9, 0.95, 0.98):
    _add(
        "resnet50",
        "GMP",
        _s,
        "ist-converted",
        in_paper_results=False,
        notes="GMP (Zhu & Gupta 2017), trained by the authors; not in the paper's raw results",
        **_R50,
    )
for _method in ("AC/DC", "WoodFisher"):
    for _s in (0.8, 0.9, 0.95, 0.98):
        _add("resnet50", _method, _s, "ist-converted", in_paper_results=_s != 0.98, **_R50)
for _method in ("RigL ERK 1x", "RigL ERK 5x"):
    for _s in (0.8, 0.9, 0.95):
        _add(
            "resnet50",
            _method,
            _s,
            "rigl-tf",
            preprocessing=BICUBIC,
            variant="resnet50_tf",
            notes=(
                "Run in the authors' ResnetTF stem (sparse-imagenet-transfer "
                "models/external/rigl/resnet.py:95-96, 106-107): a (0,1,0,1) zero pad, then an "
                "unpadded 3x3/2 max-pool, TF's SAME pooling; weights as torchvision's ResNet-50."
            ),
            **_R50,
        )
# STR's sparsities are learned: its release table (RAIVNLab/STR README.md, "STR Sparse Models")
# gives each published file's; the paper labels them 80/90/95/98 (ResNet-50) and 75/90
# (MobileNetV1). STR's fc is a bias-free 1x1 conv (sparse-imagenet-transfer
# models/external/str/STR_resnet.py:117, builder.py:36-39, 148-150: kaiming-normal fan-in);
# the rules are no-ops if the conversion made it a Linear, and full finetuning attaches the same.
_STR_RULES = FORMATS.get("str").rules[1:]  # fold thresholds, 1x1-conv fc to Linear, zero bias
_STR_NOTES = "sparsity learned: actual_sparsity is STR's release table's (README.md)"
for _s, _actual in ((0.8, 0.8127), (0.9, 0.9023), (0.95, 0.9515), (0.98, 0.9805)):
    _add(
        "resnet50",
        "STR",
        _s,
        "ist-converted",
        actual_sparsity=_actual,
        head="conv1x1",
        extra_rules=_STR_RULES,
        notes=_STR_NOTES,
        **_R50,
    )
# LTH-T prunes the convolutions but conv1, 20% of what is left per IMP round
# (VITA-Group/CV_LTH_Pre-training main_imp_imagenet.py:44 `--percent 0.2`, :229
# `pruning_model(model.module, args.percent, False)`; pruning_utils.py:15-34): after k rounds
# 1 - 0.8^k of those weights, so the paper's 80/90/95 are rounds 7, 10 and 13.
for _s, _rounds in ((0.8, 7), (0.9, 10), (0.95, 13)):
    _add(
        "resnet50",
        "LTH-T",
        _s,
        "ist-converted",
        actual_sparsity=round(1 - 0.8**_rounds, 4),
        sparsity_excludes=("conv1", "fc"),
        notes=(
            "LTH-T (Chen et al. 2021) checkpoints were shared privately, never published, so "
            "actual_sparsity is IMP's 1 - 0.8^k over the convolutions it prunes (conv1 and fc "
            "dense), not a measured file's"
        ),
    )

# --- MobileNetV1 -------------------------------------------------------------------------
# The authors' get_model builds a converted MobileNetV1 file in the layout its model_config
# names (sparse-imagenet-transfer models/__init__.py:12-17, utils/checkpoints.py:124-133):
# `mobilenet` (ours), `mobilenet_str` (STR's, and M-FAC's: its README calls its files
# "compatible with the model definitions in the STR repository", whose MobileNetV1 is our
# `model.N` body with a bias-free 1x1-conv `fc`: RAIVNLab/STR models/mobilenetv1.py:28, 45) or
# `mobilenet_amc` (`conv1`/`features`/`classifier`). Every MobileNetV1 entry reads all three:
# each rule is a no-op on the layouts it does not name.
_MBV1_RULES = (*AMC_MOBILENET_TO_OURS, *_STR_RULES)
_add("mobilenetv1", "Dense", 0.0, "ist-converted", extra_rules=_MBV1_RULES, **_MBV1)
for _s in (0.3, 0.4, 0.5, 0.75, 0.9):
    _add("mobilenetv1", "AC/DC", _s, "ist-converted", extra_rules=_MBV1_RULES, **_MBV1)
for _s in (0.75, 0.89):
    _add("mobilenetv1", "M-FAC", _s, "ist-converted", extra_rules=_MBV1_RULES, **_MBV1)
for _s, _actual in ((0.75, 0.7528), (0.9, 0.8901)):
    _add(
        "mobilenetv1",
        "STR",
        _s,
        "ist-converted",
        actual_sparsity=_actual,
        head="conv1x1",
        extra_rules=_MBV1_RULES,
        notes=_STR_NOTES,
        **_MBV1,
    )

# --- torchvision's dense ImageNet weights (data only: never downloaded here) ---------------
for _arch, _url in (
    ("resnet50", "https://download.pytorch.org/models/resnet50-0676ba61.pth"),
    ("resnet18", "https://download.pytorch.org/models/resnet18-f37072fd.pth"),
):
    _add(
        _arch,
        "Dense",
        0.0,
        "torchvision",
        name=f"{_arch}.tv_in1k",
        source=_url,
        in_paper_results=False,
        notes="torchvision IMAGENET1K_V1; the 8 hex digits in the file name start its sha256",
    )


def with_source(entry: CatalogEntry, source: str, sha256: str | None = None) -> CatalogEntry:
    """The same entry read from another place (a mirror, a local copy)."""
    return replace(entry, source=source, sha256=sha256 if sha256 is not None else entry.sha256)
