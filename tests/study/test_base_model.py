"""cgcnn.study.base_model (M1 itself is trained in tests/test_notebooks.py)."""

import pytest

from cgcnn.study import base_model


def test_missing_base_model_names_the_notebook_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="01-base-model.ipynb"):
        base_model.base_checkpoint(tmp_path)
