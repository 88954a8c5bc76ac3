"""Evaluation: metrics, the benchmark and cross-validation, the challenge ranking, relationships, downstream tasks, tuning.

Modules:

* :mod:`epitensor.evaluation.benchmark`: the held-out-track protocols: score imputations, baselines side by side, cross-validation.
* :mod:`epitensor.evaluation.downstream`: downstream tasks: region features from genome factors and feature-set comparisons by cross-validation.
* :mod:`epitensor.evaluation.metrics`: imputation metrics: pure functions of observed and imputed tracks (arcsinh scale).
* :mod:`epitensor.evaluation.options`: options objects of the evaluation jobs: the benchmark and the cross-validation.
* :mod:`epitensor.evaluation.ranking`: the ENCODE Imputation Challenge's ranking rule, and bootstraps over chromosomes to feed it.
* :mod:`epitensor.evaluation.relationships`: pairwise relationships between marks: how well imputed tracks keep the observed ones.
* :mod:`epitensor.evaluation.tune`: hyperparameter search: random search over the structural hyperparameters, on validation tracks.
"""
