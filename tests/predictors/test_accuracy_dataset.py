"""Predictor datasets: CSV round trip, atomic save/append, and errors naming file, line and column."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from predictors.accuracy import COLUMNS, PredictorDataset, synthetic_accuracy
from search_spaces import InputError, get_space
from search_spaces.testing import small_mbv3


@pytest.fixture()
def space():
    return small_mbv3()


@pytest.fixture()
def dataset(space):
    rng = np.random.default_rng(0)
    genomes = [space.sample(rng) for _ in range(12)]
    data = PredictorDataset(space)
    for i, (genome, acc) in enumerate(zip(genomes, synthetic_accuracy(space, genomes))):
        data.add(genome, acc, measured_by="supernet" if i % 3 else "extracted")
    return data


def rows_of(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def write_rows(path, rows):
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def corrupt(path, line, column, value):
    """Rewrite one cell (``line`` is the 1-based file line, header = 1) and return the path."""
    rows = rows_of(path)
    rows[line - 1][rows[0].index(column)] = value
    return write_rows(path, rows)


def test_round_trip_preserves_everything(dataset, space, tmp_path):
    path = dataset.save(tmp_path / "run" / "accuracy.csv")
    back = PredictorDataset.load(path, space)
    assert back.rows == dataset.rows
    assert [r.genome.key for r in back.rows] == [r.key for r in dataset.rows]
    np.testing.assert_array_equal(back.accuracies, dataset.accuracies)  # repr() keeps every bit
    assert rows_of(path)[0] == list(COLUMNS)
    assert {r[4] for r in rows_of(path)[1:]} == {space.fingerprint()}
    assert len(back.select("extracted")) == 4 and len(back.select(["supernet", "extracted"])) == 12
    assert [p.name for p in path.parent.iterdir()] == ["accuracy.csv"]  # no temp file left behind


def test_append_keeps_a_valid_file(dataset, space, tmp_path):
    path = tmp_path / "accuracy.csv"
    first = PredictorDataset(space, dataset.rows[:4])
    first.append(path)  # creates
    PredictorDataset(space, dataset.rows[4:]).append(path)
    assert PredictorDataset.load(path, space).rows == dataset.rows
    other = small_mbv3(w_bits=[4, 8])
    with pytest.raises(InputError, match="fingerprint"):
        PredictorDataset(other).append(path)


@pytest.mark.parametrize("line, column, value, match", [
    (3, "genome", "{not json", "invalid JSON"),
    (4, "genome", '{"space": "resnet", "genes": {}}', "belongs to space 'resnet'"),
    (5, "accuracy", "nan", "finite"),
    (6, "accuracy", "high", "expected a number"),
    (7, "key", "0123456789abcdef", "does not match"),
    (8, "measured_by", "", "empty"),
    (9, "space_fingerprint", "feedfacefeedface", "'feedfacefeedface'.*this space's fingerprint"),
])
def test_malformed_rows_name_file_line_and_column(dataset, space, tmp_path, line, column, value, match):
    path = corrupt(dataset.save(tmp_path / "acc.csv"), line, column, value)
    with pytest.raises(InputError, match=match) as err:
        PredictorDataset.load(path, space)
    assert err.value.source == str(path) and err.value.line == line and err.value.field.startswith(column)
    assert f"acc.csv:{line}: {column}" in str(err.value)


def test_gene_outside_the_space_gives_the_space_error_with_the_row(dataset, space, tmp_path):
    path = dataset.save(tmp_path / "acc.csv")
    rows = rows_of(path)
    genome = json.loads(rows[2][1])
    genome["genes"]["s1.b1.kernel"] = 9
    rows[2][1] = json.dumps(genome)
    write_rows(path, rows)
    with pytest.raises(InputError, match=r"acc\.csv:3: genome\.s1\.b1\.kernel: value 9 is not allowed") as err:
        PredictorDataset.load(path, space)
    assert err.value.line == 3
    genome["genes"]["s1.b1.kernel"] = 3
    genome["genes"]["s1.b1.kernal"] = 3
    rows[2][1] = json.dumps(genome)
    with pytest.raises(InputError, match="did you mean 's1.b1.kernel'"):
        PredictorDataset.load(write_rows(path, rows), space)


def test_genomes_of_a_space_with_other_options_are_refused(dataset, tmp_path):
    path = dataset.save(tmp_path / "acc.csv")
    other = small_mbv3(w_bits=[4, 8])
    with pytest.raises(InputError, match="fingerprint") as err:
        PredictorDataset.load(path, other)
    assert other.fingerprint() in str(err.value) and dataset.space.fingerprint() in str(err.value)
    assert err.value.line == 2


def test_missing_columns_are_named_with_the_expected_ones(dataset, space, tmp_path):
    path = dataset.save(tmp_path / "acc.csv")
    rows = [[c for c in r[:2] + r[3:]] for r in rows_of(path)]
    rows[0][2] = "measuredby"
    with pytest.raises(InputError, match=r"missing columns \['accuracy', 'measured_by'\].*did you mean "
                                         r"'measured_by'.*expected the columns") as err:
        PredictorDataset.load(write_rows(path, rows), space)
    assert err.value.line == 1
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="empty file"):
        PredictorDataset.load(tmp_path / "empty.csv", space)
    with pytest.raises(InputError, match="predictor dataset not found"):
        PredictorDataset.load(tmp_path / "absent.csv", space)


def test_short_rows_and_too_few_rows(dataset, space, tmp_path):
    path = dataset.save(tmp_path / "acc.csv")
    rows = rows_of(path)
    rows[5] = rows[5][:3]
    with pytest.raises(InputError, match="3 values but the header has 5") as err:
        PredictorDataset.load(write_rows(path, rows), space)
    assert err.value.line == 6
    small = PredictorDataset(space, dataset.rows[:7]).save(tmp_path / "small.csv")
    with pytest.raises(InputError, match="7 rows; need at least 10.*3 more") as err:
        PredictorDataset.load(small, space)
    assert err.value.source == str(small)
    assert len(PredictorDataset.load(small, space, min_rows=0)) == 7


def test_add_validates(space, dataset):
    other = get_space("mbv3").sample(np.random.default_rng(0))
    with pytest.raises(InputError):
        dataset.add(other, 70.0, measured_by="supernet")
    with pytest.raises(InputError, match="finite"):
        dataset.add(dataset.genomes[0], float("inf"), measured_by="supernet")
    with pytest.raises(InputError, match="measured_by"):
        dataset.add(dataset.genomes[0], 70.0, measured_by="")


def test_structurally_bad_gene_values_name_the_gene(dataset, space, tmp_path):
    path = dataset.save(tmp_path / "acc.csv")
    rows = rows_of(path)
    genome = json.loads(rows[1][1])
    genome["genes"]["s1.depth"] = [2]
    rows[1][1] = json.dumps(genome)
    with pytest.raises(InputError, match=r"acc\.csv:2: genome\.genes\.s1\.depth: expected an int"):
        PredictorDataset.load(write_rows(path, rows), space)
