"""report.md of a run: what it says when its numbers cannot mean anything."""

import math

import pandas as pd

from cgcnn.study.report import empty_domain_note, fixture_note, markdown_table


def test_a_missing_value_is_a_dash_not_none_or_nan():
    table = pd.DataFrame({"protocol": ["grouped"], "n_in": [0], "mae_in": [None], "mae_out": [0.5361], "d": [math.nan]})
    assert markdown_table(table, index=False).splitlines()[-1] == "| grouped | 0 | – | 0.536 | – |"


def test_why_no_material_is_in_domain_is_said():
    separation = pd.DataFrame(
        {"protocol": ["grouped", "chemistry_shift"], "n_in": [0, 0], "n_out": [23, 23], "mae_in": [None, None]}
    )
    rules = pd.DataFrame(
        {
            "protocol": ["grouped", "grouped", "chemistry_shift"],
            "rule": ["rare element", "far from the training crystals", "rare element"],
            "n": [23, 2, 23],
        }
    )
    note = empty_domain_note(separation, rules)
    assert note.startswith("No material is in domain under any protocol: the rule 'rare element' flags all 23")
    assert "cannot be measured (`–`)" in note
    one = separation.assign(n_in=[0, 5], n_out=[23, 18])
    assert empty_domain_note(one, rules).startswith("No material is in domain under grouped: the rule 'rare element'")
    assert empty_domain_note(separation.assign(n_in=[3, 5]), rules) == ""


def test_a_fixture_run_says_its_numbers_mean_nothing():
    note = fixture_note("fixture", "/home/me/repo/tests/fixtures/bucket")
    assert (
        note.startswith("> **These numbers mean nothing.**")
        and "bundled fixture" in note
        and "`fixture` profile" in note
    )
    assert "`fixture` profile" in fixture_note("fixture", "/data/bucket") and "bundled" not in fixture_note(
        "fixture", "/data/bucket"
    )
    assert "bundled fixture" in fixture_note("default", "tests/fixtures/bucket/")
    assert fixture_note("ship", "/work/shared/data/bucket") == "" and fixture_note("default", "s3://my-bucket") == ""
