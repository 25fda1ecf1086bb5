"""What the models learnt: ``tsne`` (maps fitted on one set, others projected) and
``figures`` (the study's figures and count tables)."""
