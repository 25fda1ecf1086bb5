"""Band-gap domain adaptation with CGCNN.

A re-implementation of the Crystal Graph Convolutional Neural Network (Xie & Grossman,
PRL 120, 145301, 2018) and of the domain-adaptation study built on it (Masood et al.,
Cell Rep. Phys. Sci. 2023): graphs, model, training, adaptation, evaluation, embeddings,
and the ETL that prepares the three datasets.
"""

__version__ = "0.1.0"
