"""The model's maths: hyperparameters and presets, the torch module, inference, the saved-model format.

Nothing here trains or builds an estimator: the module holds parameters and
``forward``, inference is the one prediction path.

Modules:

* :mod:`epitensor.nn.average`: the assay's average activity as a known input of the model ("pitfall" fix, optional).
* :mod:`epitensor.nn.hyperparams`: hyperparameters, declared once per layer: the module's, a training loop's, the estimator's.
* :mod:`epitensor.nn.inference`: inference, written once: many tracks over many positions, sharing the genome projection.
* :mod:`epitensor.nn.modeldir`: the saved-model directory: file names, config.json, checked weight files, lazy genome axes.
* :mod:`epitensor.nn.module`: the torch module: cell type, assay and multi-scale genome embeddings feeding an MLP.
"""
