"""The genome: coordinates, chromosome sizes, 25-bp bins, region layouts and annotations.

Intervals are 0-based and half-open; bin ``i`` covers ``[25 i, 25 i + 25)``.

Modules:

* :mod:`epitensor.genome.annotations`: genome annotations (TSS, genes, ChromHMM enhancers, blacklist, peaks) mapped onto a layout.
* :mod:`epitensor.genome.coordinates`: genome coordinates: chromosome sizes, 25-bp bins and region layouts.
* :mod:`epitensor.genome.pilot`: the ENCODE pilot regions of hg19 and their annotations, as bundled with the package.
"""
