"""Adapting the shipped ensemble to a lab's own measured band gaps, with an honest verdict
(``cgcnn finetune``; docs/finetune.md): :func:`cgcnn.finetune.run.finetune` and its steps."""
