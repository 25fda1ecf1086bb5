"""Pretrained backbones beside CGCNN: their crystal representations, cached by content, and the
heads the study fine-tunes from them (:mod:`cgcnn.backbones.chgnet`, :mod:`cgcnn.backbones.heads`).
Optional: without the extra that brings a backbone, its recipes are left out of a profile."""
