"""The network: the paper's CGCNN (``layers``, ``model``) and, as a separate part, its
conditioning on per-crystal descriptors (PBE gap, composition, fidelity; ``conditioning``)."""
