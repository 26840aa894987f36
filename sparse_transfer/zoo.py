"""The upstream zoo: pretrained and pruned models stored as data (weights, masks, metadata).

The quickstart zoo is built from a recipe: pretrain the quickstart CNN on `digits_0to4`, then
prune copies of it with each method at each sparsity. Entries are cached under the zoo directory
and keyed by the recipe's hash, so a second sweep reuses them and a changed recipe rebuilds.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from sparse_transfer.data import DATASETS
from sparse_transfer.models import ARCHS, UpstreamCheckpoint, load_upstream, save_upstream
from sparse_transfer.pruning import METHODS, PruneContext, prunable_weights, sparsity_report
from sparse_transfer.transfer.loop import evaluate, make_optimizer, normalize, train_epoch

__all__ = ["QUICKSTART_RECIPE", "ZooRecipe", "entry_path", "ensure_entry", "list_entries"]


@dataclass(frozen=True)
class ZooRecipe:
    name: str
    arch: str
    dataset: str
    pretrain_epochs: int
    prune_epochs: int
    entries: tuple[tuple[str, float], ...]  # (method, sparsity)
    hparams: dict = field(default_factory=dict)
    seed: int = 0

    def entry_name(self, method: str, sparsity: float) -> str:
        return (
            f"{self.name}/{method}"
            if method == "dense"
            else f"{self.name}/{method}_{round(sparsity * 100)}"
        )

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


QUICKSTART_RECIPE = ZooRecipe(
    name="quickstart",
    arch="quickstart_cnn",
    dataset="digits_0to4",
    pretrain_epochs=15,
    prune_epochs=9,
    entries=(("dense", 0.0), ("magnitude", 0.7), ("magnitude", 0.9), ("gmp", 0.7), ("gmp", 0.9)),
    hparams={
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 64,
        "label_smoothing": 0.0,
    },
)
RECIPES = {QUICKSTART_RECIPE.name: QUICKSTART_RECIPE}


def entry_path(zoo_dir: Path, name: str) -> Path:
    return Path(zoo_dir) / f"{name}.pt"


def ensure_entry(zoo_dir: Path, name: str, log=print) -> Path:
    """Path of zoo entry `name`, building its recipe first if it is missing or stale."""
    recipe = recipe_of(name)
    recipe_name = recipe.name
    known = [recipe.entry_name(m, s) for m, s in recipe.entries]
    if name not in known:
        raise KeyError(f"zoo entry {name!r} is not in recipe {recipe_name!r}; known: {known}")
    zoo_dir = Path(zoo_dir)
    zoo_dir.mkdir(parents=True, exist_ok=True)
    # One builder at a time per zoo directory; others wait and then find the entries.
    with open(zoo_dir / f".{recipe_name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _is_current(zoo_dir, recipe):
            build_recipe(zoo_dir, recipe, log=log)
    return entry_path(zoo_dir, name)


def recipe_of(name: str) -> ZooRecipe:
    recipe_name = name.split("/", 1)[0]
    if recipe_name not in RECIPES:
        raise KeyError(f"unknown zoo {recipe_name!r} in entry {name!r}; known: {sorted(RECIPES)}")
    return RECIPES[recipe_name]


def _is_current(zoo_dir: Path, recipe: ZooRecipe) -> bool:
    for method, sparsity in recipe.entries:
        meta = entry_path(zoo_dir, recipe.entry_name(method, sparsity)).with_suffix(".json")
        if not meta.is_file() or json.loads(meta.read_text()).get("recipe") != recipe.digest():
            return False
    return True


def build_recipe(zoo_dir: Path, recipe: ZooRecipe, log=print) -> None:
    started = time.perf_counter()
    dataset = DATASETS.get(recipe.dataset)
    preprocessing = _preprocessing(dataset.load("train")[0])
    train_x, train_y = dataset.load("train")
    val_x, val_y = dataset.load("val")
    train_x, val_x = normalize(train_x, preprocessing), normalize(val_x, preprocessing)
    arch = ARCHS.get(recipe.arch)
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    dense = arch.build(dataset.num_classes)
    hparams = dict(recipe.hparams)
    optimizer = make_optimizer(dense.parameters(), hparams)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, recipe.pretrain_epochs)
    for _ in range(recipe.pretrain_epochs):
        train_epoch(
            dense,
            train_x,
            train_y,
            optimizer,
            batch_size=hparams["batch_size"],
            generator=generator,
            augment=True,
        )
        schedule.step()
    log(
        f"zoo {recipe.name}: pretrained {recipe.arch} on {recipe.dataset} "
        f"(val top1 {evaluate(dense, val_x, val_y, dataset.num_classes)['top1']:.1f}%)"
    )
    for method_name, sparsity in recipe.entries:
        model = copy.deepcopy(dense)
        ctx = PruneContext(
            train_x,
            train_y,
            recipe.prune_epochs,
            {**hparams, "lr": hparams["lr"] / 5},
            generator,
            exclude=(arch.classifier,),
        )
        masks = METHODS.get(method_name).prune(model, sparsity, ctx)
        name = recipe.entry_name(method_name, sparsity)
        metrics = evaluate(model, val_x, val_y, dataset.num_classes)
        total, per_layer = sparsity_report(prunable_weights(model, exclude=(arch.classifier,)))
        metadata = {
            "name": name,
            "recipe": recipe.digest(),
            "method": method_name,
            "arch": recipe.arch,
            "target_sparsity": sparsity,
            "sparsity": total,
            "per_layer_sparsity": per_layer,
            "upstream_dataset": recipe.dataset,
            "upstream_val_top1": metrics["top1"],
            "preprocessing": preprocessing,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        checkpoint = UpstreamCheckpoint(
            recipe.arch, dataset.num_classes, model.state_dict(), masks, metadata
        )
        path = entry_path(zoo_dir, name)
        metadata["sha256"] = save_upstream(path, checkpoint)
        path.with_suffix(".json").write_text(json.dumps(metadata, indent=2))
        log(f"zoo {name}: sparsity {total:.3f}, upstream val top1 {metrics['top1']:.1f}%")
    log(f"zoo {recipe.name}: built in {time.perf_counter() - started:.1f}s")


def _preprocessing(images: torch.Tensor) -> dict:
    return {
        "mean": [float(images.mean())],
        "std": [float(images.std())],
        "input_size": list(images.shape[-2:]),
        "interpolation": "none",
    }


def list_entries(zoo_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(zoo_dir).rglob("*.json"))]


def resolve_checkpoint(path: Path) -> UpstreamCheckpoint:
    return load_upstream(path)
