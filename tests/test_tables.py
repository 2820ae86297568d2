"""nnx.tables.load_file: a classification dataset from a CSV, TSV or .npz
file of the user's, checked against the file's contents read by Python's csv
module and scikit-learn's LabelEncoder."""

import csv
import gzip
import re
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.preprocessing import LabelEncoder

from nnx.data import DatasetError, prepare_dataset
from nnx.tables import load_file


def _write_csv(path, header, rows, delimiter=","):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def iris_csv(tmp_path):
    d = load_iris()
    rows = [[*x, d.target_names[y]] for x, y in zip(d.data, d.target)]
    return _write_csv(tmp_path / "iris.csv", [*d.feature_names, "species"], rows), d


def _all_rows(ds):
    return np.concatenate([ds.X_train, ds.X_test]), np.concatenate([ds.y_train, ds.y_test])


def _sorted_rows(X, y):
    order = np.lexsort(np.column_stack([X, y]).T[::-1])
    return X[order], y[order]


def test_a_csv_with_string_labels_gives_every_row_once_with_sorted_classes(iris_csv):
    path, d = iris_csv
    ds = load_file(path, dtype="float64")
    assert ds.class_names == ("setosa", "versicolor", "virginica")  # LabelEncoder's order
    assert ds.n_classes == 3 and ds.X_train.dtype == np.float64
    assert (len(ds.y_train), len(ds.y_test)) == (120, 30)
    assert np.bincount(ds.y_test).tolist() == [10, 10, 10]  # stratified
    X, y = _all_rows(ds)
    want_y = LabelEncoder().fit_transform(d.target_names[d.target])
    got = _sorted_rows(X, y)
    want = _sorted_rows(d.data, want_y)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_the_test_rows_do_not_depend_on_anything_but_the_file(iris_csv):
    path, _ = iris_csv
    a, b = load_file(path), load_file(path, dtype="float64")
    np.testing.assert_array_equal(a.X_test, b.X_test.astype(np.float32))
    c = load_file(path, test_fraction=0.5)
    assert len(c.y_test) == 75


def test_test_fraction_none_makes_every_row_a_test_row_in_file_order(iris_csv):
    path, d = iris_csv
    ds = load_file(path, test_fraction=None, dtype="float64")
    assert ds.X_train.shape == (0, 4)
    np.testing.assert_array_equal(ds.X_test, d.data)
    np.testing.assert_array_equal(ds.y_test, d.target)


def test_target_by_name_or_index_and_no_header(tmp_path):
    rows = [[i % 3, i * 0.5, -i] for i in range(30)]
    plain = _write_csv(tmp_path / "p.csv", None, rows)
    named = _write_csv(tmp_path / "n.csv", ["label", "a", "b"], rows)
    for ds in (load_file(plain, target=0, test_fraction=None),
               load_file(named, target="label", test_fraction=None),
               load_file(named, target="-3", test_fraction=None)):
        assert ds.class_names == ("0", "1", "2")
        np.testing.assert_array_equal(ds.y_test, [r[0] for r in rows])
        np.testing.assert_array_equal(ds.X_test, np.array([r[1:] for r in rows], np.float32))


def test_whole_number_labels_sort_as_numbers_and_float_spellings_are_one_class(tmp_path):
    rows = [[i, ("10" if i % 2 else "2.0")] for i in range(20)] + [[99, "2"]]
    ds = load_file(_write_csv(tmp_path / "f.csv", ["x", "y"], rows), test_fraction=None)
    assert ds.class_names == ("2", "10")
    assert ds.y_test.tolist() == [0 if i % 2 == 0 else 1 for i in range(20)] + [0]


def test_a_tsv_and_a_gzipped_csv(tmp_path, iris_csv):
    path, d = iris_csv
    tsv = tmp_path / "iris.tsv"
    tsv.write_text(path.read_text().replace(",", "\t"))
    gz = tmp_path / "iris.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    for p in (tsv, gz):
        ds = load_file(p, test_fraction=None, dtype="float64")
        np.testing.assert_array_equal(ds.X_test, d.data)


def test_blank_lines_quoted_cells_and_a_hash_in_a_label(tmp_path):
    """'#' was a comment mark: labels C# and C merged, an Excel row starting
    with #N/A vanished."""
    p = tmp_path / "q.csv"
    p.write_text('"a","b","kind"\n\n1,2,"x, y"\n3,4,C#\n\n5,6,C\n')
    ds = load_file(p, test_fraction=None)
    assert ds.class_names == ("C", "C#", "x, y")
    np.testing.assert_array_equal(ds.X_test, [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(ds.y_test, [2, 1, 0])


def test_npz_with_x_and_y_or_its_own_split(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 3)), rng.integers(0, 4, 50)
    np.savez(tmp_path / "xy.npz", X=X, y=y)
    ds = load_file(tmp_path / "xy.npz", dtype="float64")
    assert (len(ds.y_train), len(ds.y_test)) == (40, 10)
    got = _sorted_rows(*_all_rows(ds))
    np.testing.assert_array_equal(got[0], _sorted_rows(X, y)[0])
    np.savez(tmp_path / "split.npz", X_train=X[:30], y_train=y[:30], X_test=X[30:],
             y_test=np.array(["0", "1", "2", "3"] * 5))
    ds = load_file(tmp_path / "split.npz", dtype="float64")
    np.testing.assert_array_equal(ds.X_train, X[:30])
    np.testing.assert_array_equal(ds.y_test, [0, 1, 2, 3] * 5)
    every = load_file(tmp_path / "split.npz", test_fraction=None, dtype="float64")
    assert every.X_train.shape == (0, 3) and len(every.y_test) == 50  # new rows: all of them


def test_labels_mapped_onto_a_models_classes(iris_csv):
    path, d = iris_csv
    ds = load_file(path, test_fraction=None, classes=["virginica", "setosa", "versicolor"])
    np.testing.assert_array_equal(ds.y_test, (d.target + 1) % 3)
    with pytest.raises(DatasetError, match=r"labels \['virginica'\] are not among the model's "
                                           r"classes \['setosa', 'versicolor'\]"):
        load_file(path, test_fraction=None, classes=["setosa", "versicolor"])


def test_the_loaded_dataset_prepares_like_a_known_one(iris_csv):
    prep = prepare_dataset(load_file(iris_csv[0]), seed=3)
    assert prep.X_val.shape == (12, 4) and prep.class_names[0] == "setosa"
    np.testing.assert_allclose(prep.X_train.mean(axis=0), 0, atol=1e-6)


@pytest.mark.parametrize("text, pattern", [
    ("a,b,y\n1,,c\n2,3,d\n", r"data row 1, column 'b' holds an empty cell; expected a number"),
    ("a,b,y\n1,2,c\n2,red,d\n", r"data row 2, column 'b' holds 'red'"),
    ("a,b,y\n1,2,c\n2,3\n", r"line 3 has 2 cells but the first row has 3"),
    ("a,b,y\n1,2,c\n1,234,5,d\n", r"line 3 has 4 cells but the first row has 3"),
    ("a,b,y\n1,2,c\n#N/A,3,d\n", r"data row 2, column 'a' holds '#N/A'"),
    ("a,b,y\n1,nan,c\n2,3,d\n", r"data row 1, column 'b' holds nan; expected a finite"),
    ("a,b,y\n1,2,c\n2,inf,d\n", r"data row 2, column 'b' holds inf"),
    ("a;b;y\n1;2;c\n", r"semicolon-separated"),
    ("a,b,y\n1,2,0.5\n2,3,1.5\n", r"not all whole numbers.*MLPRegressor"),
    ("a,b,y\n1,2,c\n2,3,c\n", r"hold one class, 'c'; a classifier needs at least two"),
    ("a,b,y\n", r"has a header but no data rows"),
    ("\n  \n", r"holds no rows"),
    ("a\tb\ty\n1\t2\t3\n", r"first row has 1 column.*name it \.tsv"),
])
def test_a_bad_table_is_named_by_row_and_column(tmp_path, text, pattern):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(DatasetError, match=pattern):
        load_file(p)


def test_bad_arguments(tmp_path, iris_csv):
    path, _ = iris_csv
    with pytest.raises(ValueError, match=r"expected a file ending in \.csv"):
        load_file(tmp_path / "x.xlsx")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_file(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match=r"target='specis' is not a column.*did you mean "
                                         r"'species'"):
        load_file(path, target="specis")
    with pytest.raises(ValueError, match="target=7 is not a column"):
        load_file(path, target=7)
    with pytest.raises(ValueError, match="test_fraction"):
        load_file(path, test_fraction=1.0)
    np.savez(tmp_path / "o.npz", X=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"target= applies to CSV and TSV"):
        load_file(tmp_path / "o.npz", target="y")
    np.savez(tmp_path / "k.npz", data=np.zeros((4, 2)))
    with pytest.raises(DatasetError, match=r"holds \['data'\]; expected arrays X and y"):
        load_file(tmp_path / "k.npz")
    np.savez(tmp_path / "r.npz", X=np.zeros((4, 2)), y=np.array([0, 1, 0]))
    with pytest.raises(DatasetError, match=r"one label per row \(4,\)"):
        load_file(tmp_path / "r.npz")


def test_a_header_of_numbers_is_a_header(tmp_path):
    """Years as column names (2019,2020,label over whole-number labels) were
    read as a data row: a class 'label' appeared and a sample of years."""
    p = tmp_path / "years.csv"
    p.write_text("2019,2020,label\n" + "".join(f"{i},{i + 1},{i % 2}\n" for i in range(10)))
    ds = load_file(p, test_fraction=None)
    assert ds.class_names == ("0", "1") and ds.feature_names == ("2019", "2020")
    assert ds.X_test.shape == (10, 2) and ds.target_name == "label"
    q = tmp_path / "names.csv"  # numbers as names over text labels
    q.write_text("1,2,3\n" + "".join(f"{i},{i},{'ab'[i % 2]}\n" for i in range(6)))
    assert load_file(q, test_fraction=None).class_names == ("a", "b")


def test_a_byte_order_mark_is_not_part_of_the_first_cell(tmp_path):
    rows = "".join(f"{i * 0.5},{i},{i % 2}\n" for i in range(8))
    (tmp_path / "h.csv").write_bytes(b"\xef\xbb\xbff1,f2,label\n" + rows.encode())
    (tmp_path / "n.csv").write_bytes(b"\xef\xbb\xbf" + rows.encode())
    assert load_file(tmp_path / "h.csv", target="label").feature_names == ("f1", "f2")
    assert load_file(tmp_path / "n.csv", test_fraction=None).X_test.shape == (8, 2)  # not 7


def test_a_delimiter_ending_every_row_adds_no_column(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("a,b,label,\n" + "".join(f"{i},{-i},{'xy'[i % 2]},\n" for i in range(6)))
    ds = load_file(p, test_fraction=None)
    assert ds.class_names == ("x", "y") and ds.feature_names == ("a", "b")


def test_features_are_read_by_the_names_a_model_was_trained_with(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("b,label,a\n" + "".join(f"{i},{i % 2},{-i}\n" for i in range(6)))
    ds = load_file(p, target="label", test_fraction=None, features=["a", "b"])
    np.testing.assert_array_equal(ds.X_test[:, 0], -np.arange(6))
    with pytest.raises(DatasetError, match="has no column 'c'"):
        load_file(p, target="label", test_fraction=None, features=["a", "c"])


def test_one_row_classes_are_trained_on_with_a_warning(tmp_path):
    p = tmp_path / "few.csv"
    p.write_text("x,label\n1,a\n2,a\n3,b\n4,b\n5,c\n")
    with pytest.warns(UserWarning, match=r"classes \['c'\] have one row each: it is trained on"):
        ds = load_file(p)
    assert 2 in ds.y_train and len(ds.y_test) == 1


def test_labels_as_big_whole_numbers_and_booleans(tmp_path):
    p = tmp_path / "ids.csv"
    p.write_text("x,id\n1,12345678901234567\n2,12345678901234568\n3,01\n4,1\n")
    assert load_file(p, test_fraction=None).class_names == (
        "1", "12345678901234567", "12345678901234568")
    np.savez(tmp_path / "b.npz", X=np.zeros((4, 2)), y=np.array([True, False, True, False]))
    assert load_file(tmp_path / "b.npz", test_fraction=None).class_names == ("False", "True")
    np.savez(tmp_path / "o.npz", X=np.zeros((2, 2)), y=np.array(["a", None], dtype=object))
    with pytest.raises(DatasetError, match="y holds Python objects"):
        load_file(tmp_path / "o.npz")


# ------------------------------------------------ from a review of the reader
def _iris_rows():
    d = load_iris()
    return [[*map(str, x), d.target_names[y]] for x, y in zip(d.data, d.target)], d


@pytest.mark.parametrize("header", [["0", "1", "2", "3", "4"],  # pandas' unnamed columns
                                    ["2001", "2002", "2003", "2004", "species"]])
def test_headers_of_rising_whole_numbers_are_headers(tmp_path, header):
    rows, d = _iris_rows()
    p = _write_csv(tmp_path / "h.csv", header, rows)
    ds = load_file(p, test_fraction=None, dtype="float64")
    assert ds.class_names == ("setosa", "versicolor", "virginica")
    np.testing.assert_array_equal(ds.X_test, d.data)


def test_a_missing_cell_in_the_first_row_is_an_error_not_a_header(tmp_path):
    rows, _ = _iris_rows()
    rows[0][1] = ""
    with pytest.raises(DatasetError, match=r"data row 1, column 1 holds an empty cell"):
        load_file(_write_csv(tmp_path / "m.csv", None, rows))


def test_a_headerless_target_index_is_not_taken_for_a_name(tmp_path):
    """The index given as text ("4") was looked for among the first row's
    cells: a first row holding 4 became a header."""
    rows = [[str(i % 5), str((i * 7) % 5), str(i % 2), "1", str(i % 2)] for i in range(40)]
    rows[0] = ["4", "4", "0", "1", "0"]
    p = _write_csv(tmp_path / "n.csv", None, rows)
    ds = load_file(p, target="4", test_fraction=None)
    assert ds.X_test.shape == (40, 4) and ds.class_names == ("0", "1")


def test_features_of_repeated_names_read_by_position_when_in_the_trained_order(tmp_path):
    rows = [[str(i), str(-i), str(i * i), str(i % 2)] for i in range(20)]
    p = _write_csv(tmp_path / "d.csv", ["x", "x", "x", "label"], rows)
    ds = load_file(p, test_fraction=None, features=["x", "x", "x"])
    np.testing.assert_array_equal(ds.X_test[:, 2], np.arange(20) ** 2)
    q = _write_csv(tmp_path / "e.csv", ["y", "x", "x", "label"], rows)  # trained as x,y,x
    with pytest.raises(DatasetError, match="several columns named 'x'"):
        load_file(q, test_fraction=None, features=["x", "y", "x"])


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes("a,b,label\n1,2,caf\xe9\n3,4,th\xe9\n".encode("cp1252"))
    with pytest.raises(DatasetError, match=r"is not UTF-8 text \(byte 0xe9.*CSV UTF-8"):
        load_file(p)


# ------------------------------------------------ from a newcomer's first hour
def test_labels_that_are_not_classes_name_their_column(tmp_path):
    """The refusal did not say which column it had taken for the labels (the
    last, when the labels were in the first)."""
    p = tmp_path / "first.csv"
    p.write_text("label,a,b\n0,0.5,1.5\n1,2.5,3.25\n0,4.5,5.75\n")
    with pytest.raises(DatasetError, match=r"the labels in its last column 'b' \(the target "
                                           r"when none is named\) hold 3 distinct values, not "
                                           r"all whole numbers.*name it as the target"):
        load_file(p)
    with pytest.raises(DatasetError, match=r"the labels in its target column 'a' hold"):
        load_file(p, target="a")
    assert load_file(p, target="label", test_fraction=None).class_names == ("0", "1")


def test_a_column_of_row_numbers_warns(tmp_path):
    """pandas' to_csv writes its index as a first column named ''; it was
    trained on as a feature, in silence (on sorted rows it is the label).
    Shuffled or sliced frames write it out of order or from another start."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2))
    rows = [[i, *x, int(x[0] > 0)] for i, x in enumerate(X)]
    for index, start in [(np.arange(40), 0), (rng.permutation(40) + 10, 10)]:
        data = [[i, *r[1:]] for i, r in zip(index, rows)]
        p = _write_csv(tmp_path / "pandas.csv", ["", "a", "b", "label"], data)
        with pytest.warns(UserWarning, match=rf"the unnamed feature column '' holds the row "
                                             rf"numbers {start} to {start + 39}, the index "
                                             r"pandas' to_csv writes"):
            load_file(p)
    ids = _write_csv(tmp_path / "ids.csv", None, [[r[1], i + 1, r[2], r[3]]
                                                  for i, r in enumerate(rows)])
    with pytest.warns(UserWarning, match=r"feature column 1 holds the numbers 1 to 40, one per "
                                         r"row: a row id\? .*if it is not a feature, drop it"):
        load_file(ids)
    plain = _write_csv(tmp_path / "plain.csv", ["a", "b", "label"], [r[1:] for r in rows])
    later = _write_csv(tmp_path / "later.csv", ["year", "a", "label"],  # not from 0 or 1
                       [[2000 + i, r[1], r[3]] for i, r in enumerate(rows)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_file(plain)
        load_file(later)


def test_many_whole_number_classes_of_few_rows_suggest_a_regressor(tmp_path):
    """An integer 'age' column became an 89-class classifier, with no hint."""
    rng = np.random.default_rng(0)
    rows = [[*rng.normal(size=2), int(a)] for a in rng.integers(1, 90, 200)]
    p = _write_csv(tmp_path / "ages.csv", ["a", "b", "age"], rows)
    with pytest.warns(UserWarning) as record:
        load_file(p)
    messages = [str(w.message) for w in record]
    assert any(re.search(r"the labels in its last column 'age' .* hold \d\d distinct whole "
                         r"numbers over 200 rows.*MLPRegressor", m) for m in messages), messages
    assert any(re.search(r"and \d+ more have one row each", m) for m in messages), messages
    digits = [[*rng.normal(size=2), int(a)] for a in rng.integers(0, 10, 200)]  # 10 classes
    letters = [[*rng.normal(size=2), i % 26] for i in range(200)]  # ids 0..25, balanced
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_file(_write_csv(tmp_path / "digits.csv", ["a", "b", "digit"], digits))
        load_file(_write_csv(tmp_path / "letters.csv", ["a", "b", "letter"], letters))


# ------------------------------------- from a probe with an analyst's own files
@pytest.mark.parametrize("missing,labels", [("", "ab"), ("NaN", "ab"), ("NA", "12"),
                                            ("?", "01"), ("null", "01")])
def test_a_missing_label_is_refused_by_row_not_made_a_class(tmp_path, missing, labels):
    """An empty or NaN target cell (among any labels), or NA, ? and the like
    among numeric labels, trained a class of its own, with no more than a
    one-row-class warning."""
    rows = [[i, i % 3, labels[i % 2]] for i in range(40)]
    rows[6][2] = missing
    path = _write_csv(tmp_path / "m.csv", ["x", "z", "label"], rows)
    shown = "an empty cell" if missing == "" else repr(missing)
    with pytest.raises(DatasetError, match=rf"data row 7, column 'label' \(the target\) holds "
                                           rf"{re.escape(shown)}, a missing label"):
        load_file(path)


@pytest.mark.parametrize("names", [("+", "-"), ("None", "Insomnia"), ("NA", "EU")])
def test_words_that_can_mean_missing_are_classes_among_text_labels(tmp_path, names):
    """Credit data's classes + and -, a sleep study's None, North America's NA."""
    rows = [[i, i % 3, names[i % 2]] for i in range(40)]
    ds = load_file(_write_csv(tmp_path / "c.csv", ["x", "z", "label"], rows))
    assert ds.class_names == tuple(sorted(names))


def test_two_columns_of_one_name_are_refused_at_training(tmp_path):
    """The model kept ['a', 'a', 'c']; evaluating a file with a, b, c fed
    column a twice and dropped b without a word."""
    rows = [[i, -i, i % 3, "ab"[i % 2]] for i in range(40)]
    path = _write_csv(tmp_path / "d.csv", ["a", "a", "c", "label"], rows)
    with pytest.raises(DatasetError, match="columns 0 and 1 are both named 'a'"):
        load_file(path)
    path = _write_csv(tmp_path / "t.csv", ["a", "label", "c", "label"], rows)
    with pytest.raises(DatasetError, match="columns 1 and 3 are both named 'label'"):
        load_file(path)


def test_a_float32_column_its_rounding_erases_is_named_and_only_it(tmp_path):
    """Timestamps near 1.6e9 differing by 20 within each class: read into
    float32 (steps of 128) the one informative column became noise, and
    training reached 0.53 where float64 reached 1.00, silently."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    rows = [[1_600_000_000 + 20 * c + int(rng.integers(0, 5)), 2024, 100_000 + i * 37,
             float(rng.standard_normal()), "ab"[c]] for i, c in enumerate(y)]
    path = _write_csv(tmp_path / "ts.csv", ["stamp", "year", "price", "noise", "label"], rows)
    with pytest.warns(Warning, match=r"'stamp' holds values near 1\.6e\+09 that vary by about "
                                     r"9.75 .* steps of 128") as seen:
        load_file(path)
    assert len([w for w in seen if "steps of" in str(w.message)]) == 1  # year, price: kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_file(path, dtype="float64")
    assert np.unique(ds.X_train[:, 0] % 20).size <= 5


def test_a_file_cut_short_or_misnamed_is_refused_by_name(tmp_path):
    rows = [[i, i % 3, "ab"[i % 2]] for i in range(400)]
    whole = gzip.compress(_write_csv(tmp_path / "w.csv", ["x", "z", "label"], rows).read_bytes())
    (tmp_path / "cut.csv.gz").write_bytes(whole[:len(whole) // 2])
    (tmp_path / "text.csv.gz").write_bytes((tmp_path / "w.csv").read_bytes())
    np.savez(tmp_path / "w.npz", X=np.ones((10, 2)), y=np.arange(10) % 2)
    (tmp_path / "cut.npz").write_bytes((tmp_path / "w.npz").read_bytes()[:200])
    for name, why in (("cut.csv.gz", "EOFError"), ("text.csv.gz", "BadGzipFile"),
                      ("cut.npz", "BadZipFile")):
        with pytest.raises(DatasetError, match=rf"'.*{re.escape(name)}' could not be read to "
                                               rf"its end \({why}: .*a download cut short"):
            load_file(tmp_path / name)


def test_an_npz_feature_that_is_not_finite_is_named_by_array_row_and_column(tmp_path):
    X = np.ones((200, 3))
    X[7, 1] = np.nan
    np.savez(tmp_path / "n.npz", X_train=X, y_train=np.arange(200) % 2, X_test=X[:10],
             y_test=np.arange(10) % 2)
    with pytest.raises(DatasetError, match=r"X_train\[7, 1\] is nan; expected a finite number"):
        load_file(tmp_path / "n.npz")


def test_classes_of_an_npz_test_split_that_training_never_shows_warn(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "t.npz", X_train=rng.random((50, 3)), y_train=["cat", "dog"] * 25,
             X_test=rng.random((10, 3)), y_test=["bird", "dog"] * 5)
    with pytest.warns(Warning, match=r"classes \['bird'\] are in y_test only"):
        ds = load_file(tmp_path / "t.npz")
    assert ds.class_names == ("bird", "cat", "dog")


def test_a_header_cell_with_a_line_break_is_one_header(tmp_path):
    """Excel's wrapped header text: the header's second line was read as a
    data row ("data row 1, column 'a' holds 'measured\"'")."""
    rows = [[float(i), float(-i), float(i % 3), "ab"[i % 2]] for i in range(40)]
    path = _write_csv(tmp_path / "h.csv", ["a", "b (cm)\nmeasured", "c", "label"], rows)
    ds = load_file(path, test_fraction=None, dtype="float64")
    assert ds.feature_names == ("a", "b (cm)\nmeasured", "c")
    assert sorted(ds.X_test[:, 0].tolist()) == [float(i) for i in range(40)]


def test_a_semicolon_file_with_decimal_commas_is_named_as_such(tmp_path):
    """Its rows split at the decimal commas, so the refusal said 'a comma
    inside a number or a name? quote such cells'."""
    lines = ['"a";"b";"label"'] + [f"0,{i};1,5;{'ab'[i % 2]}" for i in range(10)]
    (tmp_path / "s.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"line 2 has 3 cells but the first row has 1; .*is "
                                           r"it semicolon-separated"):
        load_file(tmp_path / "s.csv")
    lines = ["a,b,label", "1,2,a", "3", *[f"{i},{i},b" for i in range(5)]]
    (tmp_path / "o.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"line 3 has 1 cell but the first row has 3; .*a "
                                           "comma inside a number"):
        load_file(tmp_path / "o.csv")


def test_a_header_of_numbers_read_as_a_row_warns_and_a_named_target_reads_it(tmp_path):
    """Wavelengths as column names over a text label: the header trained as
    a sample of a class 'species', with one-row-class warning alone."""
    rng = np.random.default_rng(0)
    rows = [[*np.round(rng.standard_normal(3), 3), "cd"[i % 2]] for i in range(60)]
    path = _write_csv(tmp_path / "spectra.csv", ["400.5", "450.5", "500.5", "species"], rows)
    with pytest.warns(Warning, match=r"first row's target cell 'species' is in no other row.*"
                                     r"--target species"):
        load_file(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_file(path, target="species")
    assert ds.feature_names == ("400.5", "450.5", "500.5") and ds.class_names == ("c", "d")


@pytest.mark.parametrize("kind", [np.float64, np.int32])
def test_an_npz_column_float32_rounds_away_warns_too(tmp_path, kind):
    """int32 timestamps too: float32 is as wide, and holds them no better."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    X = np.column_stack([1.6e9 + 20 * y + rng.integers(0, 5, 200),
                         rng.standard_normal(200) * 100]).astype(kind)
    np.savez(tmp_path / "ts.npz", X=X, y=y)
    with pytest.warns(Warning, match=r"X\[:, 0\] holds values near 1\.6e\+09 .* steps of 128"):
        load_file(tmp_path / "ts.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_file(tmp_path / "ts.npz", dtype="float64")
