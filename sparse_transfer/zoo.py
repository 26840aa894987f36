"""The upstream zoo: pretrained and pruned models stored as data (weights, masks, metadata).

A zoo spec (sparse_transfer/config/zoo_*.yaml, or any file given to `sparse-transfer zoo build`)
pretrains one dense model on an upstream dataset, then prunes a copy of it per entry (method x
sparsity x parameters). Each entry is keyed by a digest of everything that made it, so building
again reuses what is current and rebuilds only what changed. `zoo build` runs the entries as
parallel Ray tasks and logs each to MLflow (`stage=upstream`); sweeps build packaged zoos on
demand, in process.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import time
from importlib.resources import files
from pathlib import Path

import torch

from sparse_transfer.config.zoo_spec import ZooEntrySpec, ZooSpec, load_zoo_spec
from sparse_transfer.data import DATASETS
from sparse_transfer.models import ARCHS, UpstreamCheckpoint, load_upstream, save_upstream
from sparse_transfer.models.flops import count_flops
from sparse_transfer.paths import safe_join
from sparse_transfer.pruning import METHODS, PruneContext, prunable_weights, sparsity_report
from sparse_transfer.storage import Storage
from sparse_transfer.transfer.loop import evaluate, make_optimizer, normalize, train_epoch

__all__ = [
    "QUICKSTART_RECIPE",
    "RECIPES",
    "build_zoo",
    "entry_path",
    "ensure_entry",
    "list_entries",
    "recipe_of",
]

_DEFAULT_HPARAMS = {
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "batch_size": 64,
    "label_smoothing": 0.0,
}


def _packaged() -> dict[str, ZooSpec]:
    folder = files("sparse_transfer.config")
    specs = [
        load_zoo_spec(Path(str(folder / f.name)))
        for f in folder.iterdir()
        if f.name.startswith("zoo_") and f.name.endswith(".yaml")
    ]
    return {spec.name: spec for spec in specs}


RECIPES: dict[str, ZooSpec] = _packaged()  # zoos a sweep may build on demand
QUICKSTART_RECIPE = RECIPES["quickstart"]


def entry_path(zoo_dir: Path, name: str) -> Path:
    return safe_join(Path(zoo_dir), f"{name}.pt", where="zoo entry")


def recipe_of(name: str) -> ZooSpec:
    zoo = name.split("/", 1)[0]
    if zoo not in RECIPES:
        specs = [(p, s) for p in sorted(Path("sweeps").glob("zoo_*.y*ml")) if (s := _spec(p, zoo))]
        if specs and specs[0][1].weights == "random":
            raise KeyError(
                f"zoo entry {name!r}: {specs[0][0]} builds random weights for speed only; a "
                f"sweep cannot transfer them. Time them with `sparse-transfer speed`"
            )
        spec_file = specs[0][0] if specs else f"<a zoo spec with name: {zoo}>"
        command = f"sparse-transfer zoo build {spec_file}"
        raise KeyError(
            f"zoo entry {name!r} is not built (packaged zoos: {sorted(RECIPES)}); "
            f"build it first: {command}"
        )
    return RECIPES[zoo]


def _spec(path: Path, name: str) -> ZooSpec | None:
    """The zoo spec at `path` when it is the one named `name`."""
    try:
        spec = load_zoo_spec(path)
    except Exception:  # a broken spec elsewhere is not this error's business
        return None
    return spec if spec.name == name else None


def ensure_entry(zoo_dir: Path, name: str, log=print) -> Path:
    """Path of zoo entry `name`. Built first (with whatever else of its zoo is missing or
    stale) when it is an entry of a packaged zoo; otherwise it must exist already."""
    path = entry_path(zoo_dir, name)
    zoo = name.split("/", 1)[0]
    if zoo not in RECIPES and path.is_file():
        return path  # built earlier by `zoo build` from a user's spec
    spec = recipe_of(name)
    if name not in spec.entry_names():
        raise KeyError(
            f"zoo entry {name!r} is not in zoo {spec.name!r}; known: {spec.entry_names()}"
        )
    build_zoo(spec, Path(zoo_dir), log=log)
    return path


def entry_digest(spec: ZooSpec, entry: ZooEntrySpec) -> str:
    return _digest(
        {
            "pretrain": _pretrain_digest(spec),
            "entry": entry.model_dump(),
            "prune_epochs": spec.prune_epochs,
            # the resolved policy: a changed method default rebuilds the entries it made
            "policy": entry.resolved_policy().model_dump(),
        }
    )


def _pretrain_digest(spec: ZooSpec) -> str:
    keys = ("arch", "dataset", "pretrain_epochs", "hparams", "seed")
    if spec.weights == "random":  # a trained zoo's digests stay what they were
        keys += ("weights", "num_classes")
    return _digest({k: getattr(spec, k) for k in keys})


def _digest(blob: dict) -> str:
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def stale_entries(spec: ZooSpec, zoo_dir: Path) -> list[ZooEntrySpec]:
    out = []
    for entry in spec.entries:
        meta = entry_path(zoo_dir, f"{spec.name}/{entry.entry}").with_suffix(".json")
        if not meta.is_file() or json.loads(meta.read_text()).get("digest") != entry_digest(
            spec, entry
        ):
            out.append(entry)
    return out


def build_zoo(spec: ZooSpec, zoo_dir: Path, *, log=print, use_ray: bool = False) -> list[dict]:
    """Build the missing or stale entries; returns their metadata (empty when all current).
    One builder at a time per zoo directory; others wait, then find the entries built."""
    zoo_dir.mkdir(parents=True, exist_ok=True)
    with open(zoo_dir / f".{spec.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        todo = stale_entries(spec, zoo_dir)
        if not todo:
            return []
        started = time.perf_counter()
        if spec.weights == "random":
            built = [build_random_entry(spec, e, str(zoo_dir)) for e in todo]
            log(f"zoo {spec.name}: built {len(built)} speed-only entries (random weights)")
            return built
        pretrained = _pretrained(spec, zoo_dir, log)
        if use_ray:
            import ray

            task = ray.remote(num_cpus=spec.resources.cpu, num_gpus=spec.resources.gpu)(
                build_entry
            )
            built = ray.get([task.remote(spec, e, str(pretrained), str(zoo_dir)) for e in todo])
        else:
            built = [build_entry(spec, e, str(pretrained), str(zoo_dir)) for e in todo]
        for meta in built:
            log(
                f"zoo {meta['name']}: sparsity {meta['sparsity']:.4f}, "
                f"upstream val top1 {meta['upstream_val_top1']:.1f}%"
            )
        log(f"zoo {spec.name}: built {len(built)} entries in {time.perf_counter() - started:.1f}s")
        return built


def _data(spec: ZooSpec):
    dataset = DATASETS.get(spec.dataset)
    train_x, train_y = dataset.load("train")
    val_x, val_y = dataset.load("val")
    preprocessing = {
        "mean": [float(train_x.mean())],
        "std": [float(train_x.std())],
        "input_size": list(train_x.shape[-2:]),
        "interpolation": "none",
    }
    return (
        dataset,
        preprocessing,
        normalize(train_x, preprocessing),
        train_y,
        normalize(val_x, preprocessing),
        val_y,
    )


def _pretrained(spec: ZooSpec, zoo_dir: Path, log) -> Path:
    """The dense starting model, trained once per pretraining settings and kept."""
    path = zoo_dir / spec.name / f"_pretrained-{_pretrain_digest(spec)}.pt"
    if path.is_file():
        return path
    dataset, preprocessing, train_x, train_y, val_x, val_y = _data(spec)
    torch.manual_seed(spec.seed)
    generator = torch.Generator().manual_seed(spec.seed)
    model = ARCHS.get(spec.arch).build(dataset.num_classes)
    hparams = {**_DEFAULT_HPARAMS, **spec.hparams}
    optimizer = make_optimizer(model.parameters(), hparams)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, spec.pretrain_epochs)
    for _ in range(spec.pretrain_epochs):
        train_epoch(
            model,
            train_x,
            train_y,
            optimizer,
            batch_size=int(hparams["batch_size"]),
            generator=generator,
            augment=True,
        )
        schedule.step()
    top1 = evaluate(model, val_x, val_y, dataset.num_classes)["top1"]
    log(f"zoo {spec.name}: pretrained {spec.arch} on {spec.dataset} (val top1 {top1:.1f}%)")
    save_upstream(
        path,
        UpstreamCheckpoint(
            spec.arch,
            dataset.num_classes,
            model.state_dict(),
            {},
            {"preprocessing": preprocessing},
        ),
    )
    return path


def build_entry(spec: ZooSpec, entry: ZooEntrySpec, pretrained: str, zoo_dir: str) -> dict:
    """Prune a copy of the pretrained model with one method; write weights, masks, metadata."""
    dataset, preprocessing, train_x, train_y, val_x, val_y = _data(spec)
    arch = ARCHS.get(spec.arch)
    model = copy.deepcopy(load_upstream(pretrained).build_model())
    torch.manual_seed(spec.seed)
    generator = torch.Generator().manual_seed(spec.seed)
    hparams = {**_DEFAULT_HPARAMS, **spec.hparams}
    hparams["lr"] = hparams["lr"] / 5  # pruning finetunes from a trained model
    method = METHODS.get(entry.method)
    params_type = getattr(method, "params_type", None)
    if params_type is not None:
        method = type(method)(params=params_type(**entry.params))
    # Which layers stay dense and how sparsity spreads: the method's policy, as the entry has it.
    policy = entry.resolved_policy()
    exclude = policy.exclude(arch.first_conv, arch.classifier)
    ctx = PruneContext(
        train_x,
        train_y,
        spec.prune_epochs,
        hparams,
        generator,
        exclude=exclude,
        distribution=policy.distribution,
    )
    masks = method.prune(model, entry.sparsity, ctx)
    name = f"{spec.name}/{entry.entry}"
    total, per_layer = sparsity_report(prunable_weights(model, exclude=exclude))
    dense_flops, sparse_flops = count_flops(model, arch.input_shape)
    metadata = {
        "name": name,
        "zoo": spec.name,
        "digest": entry_digest(spec, entry),
        "method": entry.method,
        "params": entry.params,
        "policy": policy.model_dump(),
        "arch": spec.arch,
        "target_sparsity": entry.sparsity,
        "sparsity": total,
        "per_layer_sparsity": per_layer,
        "upstream_dataset": spec.dataset,
        "upstream_val_top1": evaluate(model, val_x, val_y, dataset.num_classes)["top1"],
        "dense_flops": dense_flops,
        "sparse_flops": sparse_flops,
        "preprocessing": preprocessing,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    path = entry_path(Path(zoo_dir), name)
    metadata["sha256"] = save_upstream(
        path,
        UpstreamCheckpoint(spec.arch, dataset.num_classes, model.state_dict(), masks, metadata),
    )
    path.with_suffix(".json").write_text(json.dumps(metadata, indent=2))
    return metadata


RANDOM_WEIGHTS = "random (speed only)"


def build_random_entry(spec: ZooSpec, entry: ZooEntrySpec, zoo_dir: str) -> dict:
    """A speed-only entry: the architecture's seeded random initialisation, pruned by the
    entry's data-free method and policy with no finetuning. Marked `weights: random (speed
    only)`: its accuracy means nothing and is never reported."""
    arch = ARCHS.get(spec.arch)
    torch.manual_seed(spec.seed)
    model = arch.build(spec.num_classes)
    policy = entry.resolved_policy()
    exclude = policy.exclude(arch.first_conv, arch.classifier)
    no_data = torch.empty(0)
    ctx = PruneContext(
        no_data,
        no_data.long(),
        0,
        dict(_DEFAULT_HPARAMS),
        torch.Generator().manual_seed(spec.seed),
        exclude=exclude,
        distribution=policy.distribution,
    )
    masks = METHODS.get(entry.method).prune(model, entry.sparsity, ctx)
    name = f"{spec.name}/{entry.entry}"
    total, per_layer = sparsity_report(prunable_weights(model, exclude=exclude))
    dense_flops, sparse_flops = count_flops(model, arch.input_shape)
    metadata = {
        "name": name,
        "zoo": spec.name,
        "digest": entry_digest(spec, entry),
        "weights": RANDOM_WEIGHTS,
        "method": entry.method,
        "params": entry.params,
        "policy": policy.model_dump(),
        "arch": spec.arch,
        "target_sparsity": entry.sparsity,
        "sparsity": total,
        "per_layer_sparsity": per_layer,
        "upstream_dataset": None,
        "upstream_val_top1": None,
        "dense_flops": dense_flops,
        "sparse_flops": sparse_flops,
        # ImageNet's: what a deployed model of this architecture would be fed
        "preprocessing": {
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "input_size": list(arch.input_shape[1:]),
            "interpolation": "bilinear",
        },
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    path = entry_path(Path(zoo_dir), name)
    metadata["sha256"] = save_upstream(
        path, UpstreamCheckpoint(spec.arch, spec.num_classes, model.state_dict(), masks, metadata)
    )
    path.with_suffix(".json").write_text(json.dumps(metadata, indent=2))
    return metadata


def list_entries(store: Storage, folder: str = "zoo") -> list[dict]:
    """The metadata of every zoo entry under `folder` of a storage (S3: fetched to this node).
    A listed key that would land outside the local mirror raises UnsafePathError."""
    entries = []
    for name, _ in store.list_objects(folder):
        if name.endswith(".json"):
            store.download(folder, *name.split("/"))
            entries.append(json.loads(store.local(folder, *name.split("/")).read_text()))
    return entries
