"""The upstream checkpoints of the paper, as data (in the spirit of timm's pretrained configs).

Each entry says what a checkpoint is (architecture, pruning method, declared sparsity), where it
lives (`source`: a local path, `s3://`, `https://`, or None for "fill in"), how to read it
(`format`, `key_rules`), how to feed it (`preprocessing`) and which layer is its classifier.
Quirks are fields, never `if "rigl" in name:` in code.

Methods and sparsities are the paper's (Iofinova et al., CVPR 2022): the `(method, sparsity)`
pairs of its raw results (shared/reference/paper_raw_results/*.csv, `model`/`sparsity`), with
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
from sparse_transfer.models.keymap import KeyRule
from sparse_transfer.registry import Registry

__all__ = ["CATALOG", "IMAGENET_MEAN", "IMAGENET_STD", "CatalogEntry", "Preprocessing"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

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
    arch: str
    method: str  # as in the paper's raw results: "Dense", "AC/DC", "RigL ERK 5x", ...
    sparsity: float  # declared fraction of pruned weights
    format: str
    source: str | None = None  # local path, s3://, https://; None = "fill in"
    sha256: str | None = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    key_rules: tuple[KeyRule, ...] = ()
    classifier: str = "fc"
    num_classes: int = 1000
    # prunable layers left out of the measured sparsity (module-name prefixes)
    sparsity_excludes: tuple[str, ...] = ()
    sparsity_tolerance: float = 0.005  # |measured - declared|, as a fraction
    in_paper_results: bool = True
    published_at: str | None = None  # a page where the weights are published (not a file)
    notes: str = ""

    @property
    def needs_source(self) -> bool:
        return self.source is None


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
            notes=(
                "The authors ran RigL weights in a TF-style ResNet whose first max-pool follows "
                "a (0,1,0,1) zero pad; torchvision's pads both sides, so the pooling grid is "
                "shifted by one pixel. Weights are identical."
            ),
            **_R50,
        )
for _s in (0.8, 0.9, 0.95, 0.98):
    # STR's own fc is a bias-free 1x1 conv; the rules are no-ops if the conversion fixed that
    _add(
        "resnet50",
        "STR",
        _s,
        "ist-converted",
        extra_rules=FORMATS.get("str").rules[1:],
        notes="STR's sparsities are learned, not exact: check sparsity_tolerance on first load",
        **_R50,
    )
for _s in (0.8, 0.9, 0.95):
    _add(
        "resnet50",
        "LTH-T",
        _s,
        "ist-converted",
        notes="LTH-T (Chen et al. 2021) checkpoints were shared privately; never published",
    )

# --- MobileNetV1 -------------------------------------------------------------------------
_add("mobilenetv1", "Dense", 0.0, "ist-converted", **_MBV1)
for _s in (0.3, 0.4, 0.5, 0.75, 0.9):
    _add("mobilenetv1", "AC/DC", _s, "ist-converted", **_MBV1)
for _s in (0.75, 0.89):
    _add("mobilenetv1", "M-FAC", _s, "ist-converted", **_MBV1)
for _s in (0.75, 0.9):
    _add(
        "mobilenetv1",
        "STR",
        _s,
        "ist-converted",
        extra_rules=FORMATS.get("str").rules[1:],
        notes="STR's sparsities are learned, not exact: check sparsity_tolerance on first load",
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
