"""Files in and out: manifests, track readers, the bigWig encoder, track writers, downloads.

A new input format belongs in :mod:`epitensor.io.readers`; a new output format
in :mod:`epitensor.io.writers`.

Modules:

* :mod:`epitensor.io.bigwig`: a bigWig encoder for imputed tracks: fixedStep sections, zlib, coarse zoom levels.
* :mod:`epitensor.io.fetch`: an ingest run's scratch: bounded downloads, leftovers a later run cleans, undoing an append.
* :mod:`epitensor.io.manifest`: manifests: the TSV that lists a compendium's tracks (cell type, assay, path, md5, scale).
* :mod:`epitensor.io.names`: names of cell types and assays: the one rule every command checks them against.
* :mod:`epitensor.io.readers`: track readers: bigWig, bedGraph, wig and npz/npy files, binned to the layout's resolution.
* :mod:`epitensor.io.writers`: track files: bigWig and bedGraph writers, output file names, the parameters JSON.
"""
