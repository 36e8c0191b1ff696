import json

import numpy as np
import pytest

from charlm.errors import CharLMError
from charlm.vocab import PAD_ID, BPEVocab, CharVocab, Vocab, smallest_dtype

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
    with pytest.raises(CharLMError, match="too small"):
        BPEVocab.train(iter(["abc"]), vocab_size=100)


def test_stream_decoder_holds_back_partial_characters(bpe):
    text = "日本語 🙂 café"
    dec = bpe.stream_decoder()
    pieces = [dec.push(i) for i in bpe.encode(text)] + [dec.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
