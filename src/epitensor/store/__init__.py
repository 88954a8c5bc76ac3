"""The compendium: observed tracks on a layout in Zarr, ingestion, and stores by name.

A new bundled dataset is one entry of :data:`epitensor.store.registry.DATASETS`.

Modules:

* :mod:`epitensor.store.compendium`: the compendium store: observed tracks on a layout, in Zarr, with batch access.
* :mod:`epitensor.store.datasets`: the bundled real sample: the 5 x 5 Roadmap Epigenomics pilot-region tensor.
* :mod:`epitensor.store.ingest`: ingestion: read bigWig / bedGraph / wig / npz tracks, bin to 25 bp, transform, fill a store.
* :mod:`epitensor.store.options`: options of building a store: :class:`IngestOptions`, its defaults declared once.
* :mod:`epitensor.store.registry`: stores by name: open a compendium from a path, a URL, a list of them or a bundled dataset's name.
"""
