"""Character-level tokenizer with a fixed vocabulary stored in every checkpoint.

Text form: every token is one character, except the specials `<pad>` and `<eos>`, which are written
out in full (so `"#64<eos>"` is four tokens). `|` ends a step and `#` marks the start of the answer.
"""

from __future__ import annotations

from mct.errors import MctError

PAD = "<pad>"
EOS = "<eos>"
STEP_SEP = "|"
ANSWER_MARK = "#"
SPECIALS = (PAD, EOS)
# Digits, the operators of every task, '=', then the step separator and the answer marker.
DEFAULT_CHARS = tuple("0123456789+-*%=") + (STEP_SEP, ANSWER_MARK)
DEFAULT_VOCAB = SPECIALS + DEFAULT_CHARS


class Tokenizer:
    """Maps text to token ids and back. `<pad>` is id 0 and `<eos>` id 1 in the default vocabulary."""

    def __init__(self, vocab: tuple[str, ...] | list[str] = DEFAULT_VOCAB):
        vocab = tuple(vocab)
        if len(set(vocab)) != len(vocab):
            raise MctError(f"tokenizer vocabulary has duplicate entries: {vocab!r}")
        missing = [s for s in SPECIALS if s not in vocab]
        if missing:
            raise MctError(f"tokenizer vocabulary lacks the special tokens {missing}")
        for token in vocab:
            if token not in SPECIALS and len(token) != 1:
                raise MctError(f"tokenizer vocabulary entry {token!r} is not a single character")
        self.vocab = vocab
        self.token_to_id = {tok: i for i, tok in enumerate(vocab)}
        self.pad_id = self.token_to_id[PAD]
        self.eos_id = self.token_to_id[EOS]

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; raises MctError naming the first character outside the vocabulary."""
        ids: list[int] = []
        i = 0
        while i < len(text):
            if text[i] == "<":
                special = next((s for s in SPECIALS if text.startswith(s, i)), None)
                if special is not None:
                    ids.append(self.token_to_id[special])
                    i += len(special)
                    continue
            token_id = self.token_to_id.get(text[i])
            if token_id is None:
                allowed = "".join(t for t in self.vocab if t not in SPECIALS)
                raise MctError(
                    f"character {text[i]!r} at position {i} of {text!r} is not in the vocabulary "
                    f"(allowed: {allowed} and {', '.join(SPECIALS)})"
                )
            ids.append(token_id)
            i += 1
        return ids

    def decode(self, ids, skip_pad: bool = True) -> str:
        """Text of a sequence of ids (ints or a 1-D tensor); `<pad>` is dropped unless skip_pad=False."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        return "".join(self.vocab[i] for i in ids if not (skip_pad and i == self.pad_id))

    def to_dict(self) -> dict:
        """Plain data for checkpoints."""
        return {"type": "char", "vocab": list(self.vocab)}

    @classmethod
    def from_dict(cls, data: dict) -> "Tokenizer":
        if not isinstance(data, dict) or data.get("type") != "char" or "vocab" not in data:
            raise MctError("tokenizer data is not an mct character tokenizer")
        return cls(tuple(data["vocab"]))

    def __eq__(self, other) -> bool:
        return isinstance(other, Tokenizer) and self.vocab == other.vocab

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size})"
