"""From structures to batches: CIF reading, crystal graphs, atom and composition features,
per-crystal descriptors, graph sets and their cache, labelled datasets, batches.

Data flows ``cif``/``building`` (structures) → ``graph`` (radius graphs) → ``graphset``
(packed graphs, npz / JSON, cache) → ``dataset`` (labels, descriptors) → ``batch``.
"""
