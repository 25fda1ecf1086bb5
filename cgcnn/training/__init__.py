"""Training: ``fit`` (phases, early stopping, resume), ``adapt`` (fine-tuning with a freeze
policy, the from-scratch control), ``freeze``, ``normalizer``, self-describing
``checkpoint``\\ s, ``distributed`` (DDP under torchrun) and ``allocator``."""
