"""Training: track sets and the epoch sampler, the training plan and runner, stages, checkpoints.

The loops train torch modules; they neither build nor change an estimator.

Modules:

* :mod:`epitensor.train.checkpoints`: training checkpoints: the module, the optimisers and the kept parameter sets, per epoch.
* :mod:`epitensor.train.fitting`: training loops: the plan (loss, step, optimisers), the runner, stage 1, stage 2, transfer.
* :mod:`epitensor.train.sampling`: training data: track sets, per-axis sources and the block-shuffled epoch sampler.
"""
