"""From structures to batches: CIF reading, checks, crystal graphs, atom and composition
features, per-crystal descriptors, graph sets and their cache, labelled datasets, batches.

Data flows ``cif`` (CIF files as pymatgen reads them; ``fast_cif`` for the files it provably
reads the same) → ``checks`` (is it a crystal a graph can be built from?) and ``disorder``
(partially occupied sites, opt-in) → ``graph`` (radius graphs) → ``building`` (parallel builds,
the on-disk cache, every kind of input) → ``graphset`` (packed graphs, npz / JSON) →
``dataset`` (labels, descriptors) → ``batch``.
"""
