import json

import numpy as np
import pytest

from charlm.errors import CharLMError
from charlm.text.corpus import PrepareConfig, PreparedCorpus, prepare, prepare_cached
from charlm.text.documents import parse_separator


def test_char_corpus_layout_and_metadata(tmp_path, small_corpus, small_text):
    c = prepare([small_corpus], tmp_path / "prep", PrepareConfig(val_fraction=0.1))
    meta = json.loads((tmp_path / "prep" / "meta.json").read_text())
    assert meta["vocab"]["kind"] == "char" and meta["dtype"] == "uint8"
    assert meta["sources"][0]["sha256"] and meta["sources"][0]["bytes"] == len(small_text)
    train, val = c.split("train"), c.split("val")
    assert isinstance(train.tokens, np.memmap)
    eod = c.vocab.eod_id
    # One document, cut into the first 90% (train) and the last 10% (validation).
    cut = len(small_text) - round(0.1 * len(small_text))
    assert train.tokens[0] == eod and train.tokens[-1] == eod
    assert c.vocab.decode(train.tokens[1:-1]) == small_text[:cut]
    assert c.vocab.decode(val.tokens[1:-1]) == small_text[cut:]
    assert train.chars == cut and val.chars == len(small_text) - cut
    assert train.doc_starts.tolist() == [0] == val.doc_starts.tolist()
    assert 0 not in np.asarray(train.tokens).tolist()  # PAD never stored


def test_documents_by_separator_each_start_with_eod(tmp_path):
    names = [f"name{i}" for i in range(200)]
    src = tmp_path / "names.txt"
    src.write_text("\n".join(names) + "\n", encoding="utf-8")
    c = prepare([src], tmp_path / "prep", PrepareConfig(doc_separator=parse_separator(r"\n")))
    got = []
    for split in (c.split("train"), c.split("val")):
        toks = np.asarray(split.tokens)
        starts = split.doc_starts.tolist()
        assert np.flatnonzero(toks == c.vocab.eod_id).tolist() == starts + [len(toks) - 1]
        for a, b in zip(starts, starts[1:] + [len(toks) - 1]):
            got.append(c.vocab.decode(toks[a + 1:b]))
    assert sorted(got) == sorted(names)
    val_docs = c.split("val").documents
    assert 10 <= val_docs <= 30  # whole documents, about 10%


def test_split_is_deterministic(tmp_path):
    src = tmp_path / "docs"
    src.mkdir()
    for i in range(30):
        (src / f"d{i:02}.txt").write_text(f"document {i} " * (i + 1), encoding="utf-8")
    a = prepare([src], tmp_path / "a")
    b = prepare([src], tmp_path / "b")
    assert np.array_equal(a.split("val").tokens, b.split("val").tokens)
    assert a.split("val").documents >= 1 and a.split("train").documents >= 1


def test_invalid_utf8_names_file_and_offset(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello world\n" * 10 + b"\xff\xfe oops")
    with pytest.raises(CharLMError, match=r"bad\.txt: not UTF-8 \(invalid byte at offset 120\)"):
        prepare([bad], tmp_path / "prep")
    assert not (tmp_path / "prep").exists()


@pytest.mark.parametrize("content", [b"", b"  \n\n\t  \n"])
def test_empty_or_blank_corpus_is_refused(tmp_path, content):
    f = tmp_path / "empty.txt"
    f.write_bytes(content)
    with pytest.raises(CharLMError, match="empty"):
        prepare([f], tmp_path / "prep")


def test_directory_without_text(tmp_path):
    d = tmp_path / "bin"
    d.mkdir()
    (d / "x.bin").write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(CharLMError, match="no text files"):
        prepare([d], tmp_path / "prep")


def test_prepare_refuses_to_overwrite(tmp_path, small_corpus):
    out = tmp_path / "prep"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(CharLMError, match="not empty"):
        prepare([small_corpus], out)
    assert (out / "keep.txt").read_text() == "mine"


def test_cache_reuses_by_content(tmp_path, small_corpus):
    a = prepare_cached([small_corpus])
    copy = tmp_path / "copy.txt"
    copy.write_bytes(small_corpus.read_bytes())
    b = prepare_cached([copy])
    assert a.path.name.split("-")[-1] == b.path.name.split("-")[-1]
    small_corpus.write_text("different text entirely " * 100)
    c = prepare_cached([small_corpus])
    assert c.path != a.path


def test_bpe_corpus_round_trip(tmp_path, small_corpus, small_text):
    c = prepare([small_corpus], tmp_path / "prep", PrepareConfig(vocab="bpe", vocab_size=400))
    assert c.meta["vocab"]["kind"] == "bpe" and c.vocab.size <= 400
    assert c.meta["dtype"] == "uint16"
    text = c.vocab.decode(c.split("train").tokens[1:-1]) + c.vocab.decode(c.split("val").tokens[1:-1])
    assert text == small_text
    reopened = PreparedCorpus.open(tmp_path / "prep")
    assert reopened.vocab.to_json() == c.vocab.to_json()
