"""Jobs on files: training and imputation runs, latent factors, new cell types, the original's models, explain, annotate.

Each job is one function that the command line, the Python API and Ray call
alike, with its options declared once.

Modules:

* :mod:`epitensor.workflows.annotate`: genome annotation from the latent space: HMM states of the genome factors, BED9 and enrichments.
* :mod:`epitensor.workflows.explain`: integrated-gradients attributions of imputed signal, split by model component.
* :mod:`epitensor.workflows.extend`: adding cell types or assays to a saved model, written as a new model directory.
* :mod:`epitensor.workflows.factors`: the latent representation: genome factors per position or per region, cell type and assay factors.
* :mod:`epitensor.workflows.impute`: imputed tracks to bigWig / bedGraph, and the latent factors to Zarr, npz and TSV.
* :mod:`epitensor.workflows.options`: options objects of the jobs: one frozen dataclass per job, its defaults declared once.
* :mod:`epitensor.workflows.reference`: import models trained by the original Avocado package (Keras 2 HDF5, one file pair per chromosome).
* :mod:`epitensor.workflows.training`: training jobs on disk: stage 1 from a store to a saved model, stage 2 from a saved model.
"""
