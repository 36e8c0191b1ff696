import json

import numpy as np
import pytest

from charlm.errors import CharLMError
from charlm.text.vocab import PAD_ID, BPEVocab, CharVocab, Vocab, smallest_dtype

TEXTS = ["Hello, world!\n", "naïve café — 日本語 テキスト 🙂\tend", "", "a\r\nb\x00c"]


def test_char_round_trip_including_non_ascii():
    vocab = CharVocab("".join(TEXTS))
    for text in TEXTS:
        ids = vocab.encode(text)
        assert vocab.decode(ids) == text
        assert len(ids) == len(text)


def test_char_special_ids_and_pad_never_encoded():
    vocab = CharVocab("abc")
    assert (vocab.pad_id, vocab.unk_id, vocab.eod_id) == (PAD_ID, 1, 2) == (0, 1, 2)
    ids = vocab.encode("abcxyz")
    assert PAD_ID not in ids.tolist()
    assert ids.tolist() == [3, 4, 5, 1, 1, 1]  # unseen characters become UNK
    assert vocab.size == 6 and ids.dtype == np.uint8


def test_char_json_round_trip():
    vocab = CharVocab("zyx ü日")
    again = Vocab.from_json("char", vocab.to_json())
    assert again.itos == vocab.itos
    assert again.encode("xü日").tolist() == vocab.encode("xü日").tolist()


def test_char_json_rejects_damage():
    data = json.loads(CharVocab("abc").to_json())
    data["chars"] = ["b", "a"]
    with pytest.raises(CharLMError):
        CharVocab.from_json(json.dumps(data))
    with pytest.raises(CharLMError):
        CharVocab.from_json("{not json")


def test_smallest_dtype():
    assert smallest_dtype(256) == np.uint8
    assert smallest_dtype(257) == np.uint16
    assert smallest_dtype(70000) == np.uint32


@pytest.fixture(scope="module")
def bpe():
    corpus = ["the quick brown fox jumps over the lazy dog. " * 20,
              "naïve café — 日本語 テキスト 🙂 " * 10]
    return BPEVocab.train(iter(corpus), vocab_size=300)


def test_bpe_round_trip_including_non_ascii(bpe):
    for text in TEXTS + ["never seen: Ωμέγα ß ∑ 🚀🚀", "<pad> and <eod> are just text"]:
        ids = bpe.encode(text)
        assert bpe.decode(ids) == text


def test_bpe_pad_is_zero_and_never_encoded(bpe):
    assert bpe.tokenizer.token_to_id("<pad>") == PAD_ID == 0
    assert bpe.eod_id == 1 and bpe.unk_id is None
    ids = bpe.encode("<pad><eod> text").tolist()
    assert 0 not in ids and 1 not in ids


def test_bpe_json_round_trip(bpe):
    again = Vocab.from_json("bpe", bpe.to_json())
    text = "the lazy café 🙂"
    assert again.encode(text).tolist() == bpe.encode(text).tolist()
    assert again.size == bpe.size


def test_bpe_vocab_size_too_small():
    from charlm.text.corpus import PrepareConfig

    with pytest.raises(CharLMError, match="too small"):
        PrepareConfig(vocab="bpe", vocab_size=100)


def test_stream_decoder_holds_back_partial_characters(bpe):
    text = "日本語 🙂 café"
    dec = bpe.stream_decoder()
    pieces = [dec.push(i) for i in bpe.encode(text)] + [dec.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


# ----- properties -------------------------------------------------------------------------
from functools import lru_cache  # noqa: E402

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300))
def test_char_vocab_round_trips_any_text_it_was_built_from(text):
    vocab = CharVocab(text)
    ids = vocab.encode(text)
    assert vocab.decode(ids) == text
    assert len(ids) == len(text) and PAD_ID not in ids.tolist()
    assert (ids != vocab.unk_id).all() and (ids != vocab.eod_id).all()
    again = Vocab.from_json("char", vocab.to_json())
    assert again.encode(text).tolist() == ids.tolist()


@settings(max_examples=200, deadline=None)
@given(seen=st.text(max_size=60), unseen=st.text(min_size=1, max_size=60))
def test_char_vocab_maps_only_unseen_characters_to_unk(seen, unseen):
    vocab = CharVocab(seen)
    ids = vocab.encode(unseen).tolist()
    assert len(ids) == len(unseen)
    for ch, i in zip(unseen, ids):
        assert (i == vocab.unk_id) == (ch not in seen)
        if ch in seen:
            assert vocab.decode([i]) == ch


@lru_cache(maxsize=1)
def byte_level_bpe():
    corpus = ["the quick brown fox jumps over the lazy dog. " * 20,
              "naïve café — 日本語 テキスト 🙂 Ωμέγα " * 10]
    return BPEVocab.train(iter(corpus), vocab_size=320)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=200))
def test_byte_level_bpe_round_trips_any_unicode_text(text):
    bpe = byte_level_bpe()
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert PAD_ID not in ids.tolist() and bpe.eod_id not in ids.tolist()
    dec = bpe.stream_decoder()  # streaming (one token at a time) gives the same text
    assert "".join([dec.push(int(i)) for i in ids] + [dec.flush()]) == text
