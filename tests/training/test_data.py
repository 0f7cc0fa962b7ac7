"""data: the crops-cache split and its sampling cells — every source and band keeps a share, and
with `by_sex` women and men of a source get equal shares however unequal their numbers."""

from __future__ import annotations

import numpy as np
import pytest

from training.data import FEMALE, MALE, LabelsError, Split, band_index, cell_weights, read_index, source_weights


def split(ages, sources, sexes=None) -> Split:
    n = len(ages)
    return Split(
        np.zeros((n, 4, 4, 3), np.uint8),
        np.array(ages, np.float32),
        np.array(sources),
        None if sexes is None else np.array(sexes, dtype=object),
    )


def test_cells_share_sources_by_square_root_and_lift_rare_bands():
    ages = [30] * 300 + [15] * 12 + [30] * 100
    sources = ["big"] * 312 + ["small"] * 100
    w = cell_weights(split(ages, sources), power=0.5, boost={})
    assert sum(w.values()) == pytest.approx(1.0)
    big = sum(v for (s, _, _), v in w.items() if s == "big")
    assert big == pytest.approx(np.sqrt(312) / (np.sqrt(312) + np.sqrt(100)))
    teen, adult = w[("big", "", 1)], w[("big", "", 3)]
    # count**0.5: 12 teenagers against 300 adults sample as sqrt(12):sqrt(300), not 12:300.
    assert teen / adult == pytest.approx(np.sqrt(12 / 300))
    boosted = cell_weights(split(ages, sources), power=0.5, boost={1: 2.0})
    assert boosted[("big", "", 1)] / boosted[("big", "", 3)] == pytest.approx(2 * np.sqrt(12 / 300))


def test_by_sex_gives_women_and_men_equal_shares():
    ages = [30] * 90 + [30] * 10 + [20] * 10
    sexes = [MALE] * 90 + [FEMALE] * 10 + [FEMALE] * 10
    data = split(ages, ["s"] * 110, sexes)
    w = cell_weights(data, power=0.7, boost={}, by_sex=True)
    men = sum(v for (_, g, _), v in w.items() if g == MALE)
    women = sum(v for (_, g, _), v in w.items() if g == FEMALE)
    assert men == pytest.approx(0.5) and women == pytest.approx(0.5)
    assert w[("s", FEMALE, band_index(np.array([20]))[0])] == pytest.approx(0.25)
    # Without by_sex the same data samples men nine times as often as women of 30.
    plain = cell_weights(data, power=1.0, boost={})
    assert set(plain) == {("s", "", 2), ("s", "", 3)}


def test_female_reads_the_labels_coding_and_unknown():
    data = split([30, 30, 30], ["s"] * 3, [FEMALE, MALE, ""])
    np.testing.assert_array_equal(data.female(), [1.0, 0.0, -1.0])
    assert split([30], ["s"]).female().tolist() == [-1.0]  # a cache without a gender column
    assert data.take(2).sex.tolist() == [FEMALE, MALE]


def test_source_weights_make_each_source_count_the_same():
    w = source_weights(np.array(["a"] * 90 + ["b"] * 10))
    assert np.isclose(w[:90].sum(), w[90:].sum())


def test_source_weights_at_half_power_count_a_source_by_the_root_of_its_size():
    """The teacher heads' weighting: 90 photos weigh 3 times as much as 10, not 9 times."""
    w = source_weights(np.array(["a"] * 90 + ["b"] * 10), power=0.5)
    assert np.isclose(w[:90].sum() / w[90:].sum(), 3.0) and np.isclose(w.mean(), 1.0)


def test_read_index_reads_columns_and_names_a_folder_it_cannot_use(tmp_path):
    (tmp_path / "index.csv").write_text(
        "row,file_name,age,split,source,gender\n0,a.jpg,17,val,utkface,1 \n1,b.jpg,30.5,train,,\n"
    )
    index = read_index(tmp_path)
    assert len(index) == 2 and list(index.row) == [0, 1]
    assert list(index.source) == ["utkface", "default"] and list(index.sex) == ["1", ""]
    assert index.age.dtype == np.float32 and index.records[1]["file_name"] == "b.jpg"
    with pytest.raises(LabelsError, match="cannot read it"):
        read_index(tmp_path / "missing")
    (tmp_path / "index.csv").write_text("row,file_name,split\n0,a.jpg,val\n")
    with pytest.raises(LabelsError, match=r"index.csv: not an index of training.prepare \(KeyError"):
        read_index(tmp_path)
