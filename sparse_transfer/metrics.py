"""Metric and tag names: one name per concept across trainer, Tune, MLflow and reports."""

TRAIN_LOSS = "train_loss"
VAL_TOP1 = "val_top1"
VAL_MEAN_CLASS_ACC = "val_mean_class_acc"
TEST_TOP1 = "test_top1"
TEST_MEAN_CLASS_ACC = "test_mean_class_acc"
FINAL_SPARSITY = "final_sparsity"
UPSTREAM_SPARSITY = "upstream_sparsity"
FEATURE_CACHE_HIT = "feature_cache_hit"
LR = "lr"
EPOCH = "epoch"

# Tags every trial's MLflow run carries.
STUDY_TAGS = ("method", "sparsity", "arch", "dataset", "mode", "cell", "seed", "phase", "sweep_id")

# Cost of a trial (the sweep core logs both as metrics on every trial run, search and final).
GPU_HOURS = "gpu_hours"
CPU_HOURS = "cpu_hours"
