"""The estimators users fit: :class:`~epitensor.estimators.avocado.Avocado`, stage 2, baselines, the ensemble.

The estimator owns the model: it fits, predicts, saves and loads it; nothing
below this layer builds or changes one. A new model belongs here.

Modules:

* :mod:`epitensor.estimators.avocado`: the estimator users touch: fit, transfer, predict, latent factors, save and load.
* :mod:`epitensor.estimators.baselines`: baselines for imputation, run through the same evaluation code as the model.
* :mod:`epitensor.estimators.ensemble`: the ensemble imputation: the model and ChromImpute-style trees, lifted toward the average.
* :mod:`epitensor.estimators.stage2`: stage 2 of a fitted model: the genome factors of each axis, one task per axis.
"""
