"""Training (imported only by `mmrface train`; inference never imports this package).

trainer      the loop: `Trainer(cfg).fit()` / `train(cfg)`
objectives   which losses a config trains, the run-log report, the loss terms of a step
data         deterministic per-step batches (DistributedSampler order, resumable by step)
checkpoint   atomic safetensors + JSON checkpoints, keep-last pruning, resume
distributed  torchrun process group, device choice, gradient averaging
ema          EMA of the generator
validate     PSNR / LPIPS on a seeded validation set -> val.csv
runlog       run.log, console lines, optional TensorBoard
"""
