"""cgcnn.study.data_preparation: reading a run's datasets (the ETL stage itself runs in test_data_s3.py and the notebooks)."""

import pytest

from cgcnn.study import data_preparation


def test_missing_etl_outputs_name_the_notebook_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="01-etl.ipynb"):
        data_preparation.load_data(tmp_path)
