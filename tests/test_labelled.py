"""Labelled data as users have it: every layout, its detection, --encoding, and bad data."""

from __future__ import annotations

import json

import pytest

from charlm.errors import CharLMError
from charlm.text.labelled import LabelledConfig, check_trainable, label_order, read_labelled


def _read(paths, **options):
    return read_labelled(paths, LabelledConfig.from_given(**options))


def _pairs(examples):
    return sorted(zip(examples.labels, examples.texts))


EXPECTED = sorted([("neg", "a dull film"), ("neg", "boring"), ("pos", "a fine film"),
                   ("pos", "great fun")])


def test_folders_layout_a_subdirectory_per_label(tmp_path):
    for label, texts in (("pos", ["a fine film", "great fun"]), ("neg", ["a dull film",
                                                                          "boring"])):
        (tmp_path / "train" / label).mkdir(parents=True)
        for i, t in enumerate(texts):
            (tmp_path / "train" / label / f"{i}.txt").write_text(t + "\n")
    examples = _read([tmp_path / "train"])
    assert examples.format == "folders" and _pairs(examples) == EXPECTED
    # The label directories given themselves (aclImdb's train/ also holds unsup/).
    given = _read([tmp_path / "train" / "pos", tmp_path / "train" / "neg"])
    assert given.format == "folders" and _pairs(given) == EXPECTED


def test_files_layout_a_file_per_label_a_line_per_example(tmp_path):
    (tmp_path / "names").mkdir()
    (tmp_path / "names" / "Russian.txt").write_text("Abaimov\nAbakumov\n\n")
    (tmp_path / "names" / "Greek.txt").write_text("Adamidis\r\nAlexandropoulos\r\n")
    for paths in ([tmp_path / "names"], sorted((tmp_path / "names").iterdir())):
        examples = _read(paths)
        assert examples.format == "files"
        assert _pairs(examples) == [("Greek", "Adamidis"), ("Greek", "Alexandropoulos"),
                                    ("Russian", "Abaimov"), ("Russian", "Abakumov")]
        assert examples.empty == 1  # the empty line, skipped and counted


@pytest.mark.parametrize("delimiter,suffix", [(",", ".csv"), ("\t", ".tsv")])
def test_csv_and_tsv_with_a_header(tmp_path, delimiter, suffix):
    path = tmp_path / f"reviews{suffix}"
    rows = [["id", "review", "sentiment"], ["1", "a fine film", "pos"],
            ["2", '"boring, really"' if delimiter == "," else "boring, really", "neg"]]
    path.write_text("\n".join(delimiter.join(r) for r in rows) + "\n")
    examples = _read([path], text_column="review", label_column="sentiment")
    assert examples.format == suffix[1:]
    assert _pairs(examples) == [("neg", "boring, really"), ("pos", "a fine film")]
    with pytest.raises(CharLMError, match="no column 'text'.*--text-column"):
        _read([path])  # the default column is not there


def test_json_lines(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"text": "a fine film", "label": "pos"}, {"text": "boring", "label": 0}]) + "\n\n")
    examples = _read([path])
    assert examples.format == "jsonl" and _pairs(examples) == [("0", "boring"),
                                                               ("pos", "a fine film")]
    path.write_text(json.dumps({"body": "x", "label": "a"}) + "\n")
    with pytest.raises(CharLMError, match="no key 'text'"):
        _read([path])


def test_labelled_lines_fasttext_and_digits(tmp_path):
    fasttext = tmp_path / "ft.txt"
    fasttext.write_text("".join(f"__label__{'pos' if i % 2 else 'neg'} text {i}\n"
                                for i in range(20)))
    examples = _read([fasttext])
    assert examples.format == "labelled-lines"
    assert set(examples.labels) == {"pos", "neg"} and examples.texts[0] == "text 0"
    digits = tmp_path / "stsa.binary.train"  # the layout of Kim 2014's files
    digits.write_text("".join(f"{i % 2} some sentence number {i} .\n" for i in range(30)))
    examples = _read([digits])
    assert examples.format == "labelled-lines" and label_order(examples.labels) == ("0", "1")
    assert examples.texts[1] == "some sentence number 1 ."


def test_a_plain_list_is_not_mistaken_for_labelled_lines(tmp_path):
    # Many distinct first words: one text per line under the file's name, not labels.
    (tmp_path / "Scottish.txt").write_text("".join(f"Mac{i} Donald\n" for i in range(30)))
    (tmp_path / "Irish.txt").write_text("".join(f"O'Neill{i}\n" for i in range(30)))
    examples = _read(sorted(tmp_path.iterdir()))
    assert examples.format == "files" and set(examples.labels) == {"Irish", "Scottish"}


def test_an_ambiguous_layout_asks_for_format(tmp_path):
    (tmp_path / "a.txt").write_text("".join(f"{i % 2} text {i}\n" for i in range(30)))
    (tmp_path / "b.txt").write_text("".join(f"word{i}\n" for i in range(30)))
    with pytest.raises(CharLMError, match="--format"):
        _read([tmp_path / "a.txt", tmp_path / "b.txt"])
    # Told, it reads them as said.
    assert _read([tmp_path / "a.txt", tmp_path / "b.txt"], format="files").format == "files"


def test_format_given_overrides_detection(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("text,label\nhello,a\nbye,b\n")
    assert _pairs(_read([path], format="csv")) == [("a", "hello"), ("b", "bye")]


def test_latin1_needs_encoding_and_nel_does_not_split_lines(tmp_path):
    path = tmp_path / "subj.all"  # the shared SUBJ file's encoding: Latin-1, with U+0085 bytes
    lines = [f"{i % 2} caf\xe9 number {i} \x85 end" for i in range(20)]
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    with pytest.raises(CharLMError) as err:
        _read([path])
    message = str(err.value)
    assert str(path) in message and "offset" in message and "--encoding" in message
    assert "\n" not in message
    examples = _read([path], encoding="latin-1")
    assert len(examples) == 20  # U+0085 (NEL) is not a line end
    assert examples.texts[3] == "caf\xe9 number 3 \x85 end"


def test_bad_data_gets_one_clear_line(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    with pytest.raises(CharLMError, match="no examples.*3 empty"):
        _read([empty], format="files")
    single = tmp_path / "only.txt"
    single.write_text("one\ntwo\n")
    examples = _read([single], format="files")
    with pytest.raises(CharLMError, match="single label"):
        check_trainable(examples, str(single))
    with pytest.raises(CharLMError, match="no such file"):
        _read([tmp_path / "missing.csv"])
    several = tmp_path / "multi.txt"
    several.write_text("__label__a __label__b text\n" * 5)
    with pytest.raises(CharLMError, match="several labels"):
        _read([several], format="labelled-lines")
    missing_label = tmp_path / "nolabel.csv"
    missing_label.write_text("text,label\nhello,\n")
    with pytest.raises(CharLMError, match="line 2: no label"):
        _read([missing_label])


def test_tsv_keeps_quotation_marks_and_an_unclosed_csv_quote_is_an_error(tmp_path):
    tsv = tmp_path / "quotes.tsv"
    tsv.write_text('text\tlabel\n"Brilliant," she said\tpos\nnot "good"\tneg\n'
                   'a \"stray quote\tneg\nlast\tpos\n')
    assert _pairs(_read([tsv])) == [("neg", 'a "stray quote'), ("neg", 'not "good"'),
                                    ("pos", '"Brilliant," she said'), ("pos", "last")]
    bad = tmp_path / "open.csv"  # the quote would otherwise swallow every later row
    bad.write_text('text,label\n"never closed,pos\nnext,neg\nmore,pos\n')
    with pytest.raises(CharLMError, match="open.csv, line [0-9]+: unexpected end of data"):
        _read([bad])


def test_more_bad_data_gets_one_clear_line(tmp_path):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(CharLMError, match="holds no files"):
        _read([tmp_path / "nothing"])
    header_only = tmp_path / "header.csv"
    header_only.write_text("text,label\n")
    with pytest.raises(CharLMError, match="no examples"):
        _read([header_only])
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine", "label": "a"}\n{"text": "cut off\n')
    with pytest.raises(CharLMError, match="broken.jsonl, line 2: not a JSON object"):
        _read([broken])
    empty_label = tmp_path / "fast.txt"
    empty_label.write_text("__label__ no label here\n" * 3)
    with pytest.raises(CharLMError, match="line 1: an empty label"):
        _read([empty_label], format="labelled-lines")
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.csv").write_text("text,label\nx,1\n")
    (tmp_path / "mixed" / "b.jsonl").write_text('{"text": "y", "label": "0"}\n')
    with pytest.raises(CharLMError, match="mixes files of several formats"):
        _read([tmp_path / "mixed"])


def test_label_order_is_numeric_for_numbers():
    assert label_order(["10", "2", "1"]) == ("1", "2", "10")
    assert label_order(["pos", "neg"]) == ("neg", "pos")


def test_unsup_is_no_label_and_a_byte_order_mark_no_text(tmp_path):
    for label in ("pos", "neg", "unsup"):
        (tmp_path / "train" / label).mkdir(parents=True)
        (tmp_path / "train" / label / "0.txt").write_text(f"a {label} review")
    examples = _read([tmp_path / "train"])
    assert set(examples.labels) == {"pos", "neg"}
    assert examples.skipped == [tmp_path / "train" / "unsup"]
    csv_file = tmp_path / "sheet.csv"  # as a spreadsheet saves "CSV UTF-8"
    csv_file.write_bytes("\ufefftext,label\nhello,a\nbye,b\n".encode("utf-8"))
    assert _pairs(_read([csv_file])) == [("a", "hello"), ("b", "bye")]
