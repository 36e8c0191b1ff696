"""Vocabularies: a character vocab and a byte-level BPE vocab behind one interface.

Both reserve id 0 for PAD, which never appears in encoded text: batches fill the unused tail of a
lane with it and the loss ignores it. Both have an end-of-document id (EOD) that the corpus puts in
front of every document (it is the input that starts a document, and the target that ends the
previous one). The character vocab also has UNK for characters never seen in training; byte-level
BPE can encode any text, so it has no UNK.

    char ids:  0 <pad>   1 <unk>   2 <eod>   3.. the characters seen in training, by code point
    bpe ids:   0 <pad>   1 <eod>   2.. tokens learned by the tokenizers library
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import ClassVar

import numpy as np

from ..errors import CharLMError

PAD_ID = 0
MAX_CODEPOINT = 0x10FFFF


def smallest_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned integer type that holds every id of the vocab."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise CharLMError(f"vocab size {vocab_size} is too large")


def codepoints(text: str) -> np.ndarray:
    """The Unicode code points of ``text`` as a uint32 array, without a Python loop."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


class Vocab:
    """What every vocab offers: ids for text and back, and its JSON form."""

    kind: ClassVar[str]
    file_name: ClassVar[str]  # what the vocab is saved as, beside a corpus or a run
    pad_id: int = PAD_ID
    eod_id: int
    unk_id: int | None

    @property
    def size(self) -> int:
        raise NotImplementedError

    @property
    def dtype(self) -> np.dtype:
        return smallest_dtype(self.size)

    def encode(self, text: str) -> np.ndarray:
        """Ids of ``text`` (no EOD added), in the vocab's smallest dtype."""
        raise NotImplementedError

    def encode_many(self, texts: list[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def to_json(self) -> str:
        raise NotImplementedError

    def special_ids(self) -> list[int]:
        """Ids that never stand for text (PAD, UNK, EOD)."""
        return [i for i in (self.pad_id, self.unk_id, self.eod_id) if i is not None]

    @property
    def never_predicted(self) -> tuple[int, ...]:
        """Ids a model gives no probability: PAD (never text) and UNK (no character to say)."""
        return tuple(i for i in (self.pad_id, self.unk_id) if i is not None)

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)

    @staticmethod
    def from_json(kind: str, text: str) -> Vocab:
        if kind == "char":
            return CharVocab.from_json(text)
        if kind == "bpe":
            return BPEVocab.from_json(text)
        raise CharLMError(f"unknown vocab kind {kind!r} (expected 'char' or 'bpe')")


class CharVocab(Vocab):
    """One id per character seen in the training text, plus PAD, UNK and EOD.

    Encoding maps code points through a lookup table indexed by code point, so a whole chunk of
    text is encoded by one numpy gather.
    """

    kind = "char"
    file_name = "vocab.json"
    unk_id = 1
    eod_id = 2
    specials = ("<pad>", "<unk>", "<eod>")

    def __init__(self, chars: Iterable[str]):
        chars = sorted(set(chars))
        for c in chars:
            if len(c) != 1:
                raise CharLMError(f"char vocab entry {c!r} is not a single character")
        self.chars: list[str] = chars
        self.itos: list[str] = list(self.specials) + chars
        self._table: np.ndarray | None = None

    @classmethod
    def from_counts(cls, counts: np.ndarray) -> CharVocab:
        """Build from a histogram over code points (index = code point)."""
        return cls(chr(int(cp)) for cp in np.flatnonzero(counts))

    @property
    def size(self) -> int:
        return len(self.itos)

    @property
    def table(self) -> np.ndarray:
        if self._table is None:
            table = np.full(MAX_CODEPOINT + 1, self.unk_id, dtype=self.dtype)
            for i, c in enumerate(self.chars, start=len(self.specials)):
                table[ord(c)] = i
            self._table = table
        return self._table

    def encode(self, text: str) -> np.ndarray:
        return self.table[codepoints(text)]

    def decode(self, ids: Iterable[int]) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i == self.unk_id:
                out.append("\ufffd")
            elif i >= len(self.specials) and i < len(self.itos):
                out.append(self.itos[i])
        return "".join(out)

    def to_json(self) -> str:
        return json.dumps({"kind": "char", "specials": list(self.specials), "chars": self.chars},
                          ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> CharVocab:
        try:
            data = json.loads(text)
            chars = data["chars"]
            specials = data.get("specials", list(cls.specials))
        except (ValueError, KeyError, TypeError) as exc:
            raise CharLMError(f"char vocab is not valid JSON of the expected shape: {exc}") from None
        if tuple(specials) != cls.specials or not isinstance(chars, list):
            raise CharLMError("char vocab has unexpected special symbols")
        if len(set(chars)) != len(chars):
            raise CharLMError("char vocab lists a character twice")
        vocab = cls(chars)
        if vocab.chars != chars:
            raise CharLMError("char vocab characters are not in code point order")
        return vocab


class BPEVocab(Vocab):
    """Byte-level BPE from the ``tokenizers`` library; ``<pad>`` is id 0, ``<eod>`` id 1.

    Byte-level means every string encodes, so nothing is ever unknown. Literal ``<pad>`` or
    ``<eod>`` in the text is encoded as ordinary text, never as the special ids.
    """

    kind = "bpe"
    file_name = "tokenizer.json"
    unk_id = None
    eod_id = 1
    specials = ("<pad>", "<eod>")
    min_size = 256 + len(specials)
    max_size = 1 << 20

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.tokenizer.encode_special_tokens = True
        for i, s in enumerate(self.specials):
            if tokenizer.token_to_id(s) != i:
                raise CharLMError(f"BPE tokenizer must have {s} at id {i}")

    @classmethod
    def train(cls, texts: Iterator[str], vocab_size: int, length: int | None = None) -> BPEVocab:
        """A tokenizer of ``vocab_size`` symbols (checked by PrepareConfig) learned from
        ``texts``."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=list(cls.specials), show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(texts, trainer, length=length)
        return cls(tok)

    @property
    def size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tokenizer.encode(text).ids, dtype=self.dtype)

    def encode_many(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=self.dtype) for e in self.tokenizer.encode_batch(texts)]

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids if int(i) >= len(self.specials)]
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def to_json(self) -> str:
        return self.tokenizer.to_str()

    @classmethod
    def from_json(cls, text: str) -> BPEVocab:
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_str(text)
        except Exception as exc:  # the library raises plain Exception on bad JSON
            raise CharLMError(f"BPE tokenizer JSON could not be read: {exc}") from None
        return cls(tok)


def _byte_level_alphabet() -> dict[str, int]:
    """The byte-level BPE convention: which printable character stands for each byte.

    Bytes that are printable Latin-1 characters (33-126, 161-172, 174-255) stand for themselves;
    the other 68 bytes are given the code points 256, 257, ... in increasing byte order.
    """
    direct = [*range(33, 127), *range(161, 173), *range(174, 256)]
    table, extra = {}, 0
    for b in range(256):
        if b in direct:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


class StreamDecoder:
    """Turns ids into text one at a time for streaming output, O(1) work per id.

    A byte-level BPE token can end in the middle of a multi-byte character; its bytes go through
    an incremental UTF-8 decoder, which holds the unfinished character back until it completes.
    """

    _alphabet: dict[str, int] | None = None

    def __init__(self, vocab: Vocab):
        import codecs

        self.vocab = vocab
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.cache: dict[int, bytes] = {}

    def _bytes(self, token_id: int) -> bytes:
        if token_id not in self.cache:
            if StreamDecoder._alphabet is None:
                StreamDecoder._alphabet = _byte_level_alphabet()
            token = self.vocab.tokenizer.id_to_token(token_id) or ""
            alphabet = StreamDecoder._alphabet
            if all(ch in alphabet for ch in token):
                self.cache[token_id] = bytes(alphabet[ch] for ch in token)
            else:  # not a byte-level token: fall back to the library's decoder
                self.cache[token_id] = self.vocab.decode([token_id]).encode("utf-8")
        return self.cache[token_id]

    def push(self, token_id: int) -> str:
        token_id = int(token_id)
        if isinstance(self.vocab, CharVocab):
            return self.vocab.decode([token_id])
        if token_id < len(self.vocab.specials):
            return ""
        return self.utf8.decode(self._bytes(token_id))

    def flush(self) -> str:
        if isinstance(self.vocab, CharVocab):
            return ""
        return self.utf8.decode(b"", final=True)
