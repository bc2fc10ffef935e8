"""Character-level tokenizer with a fixed vocabulary stored in every checkpoint.

Text form: every token is one character, except the specials `<pad>` and `<eos>`, which are written
out in full (so `"#64<eos>"` is four tokens). `|` ends a step and `#` marks the start of the answer.

Number tokens (`numbers = N > 0`, the mod task's one token per residue): N more tokens after the
vocabulary, id `len(vocab) + v` for the number v in 0..N-1, written as its decimal text. The text is
unchanged ("60+60=#7<eos>"), but every run of digits is read as one number token, so that example is
seven tokens; the digit characters stay in the vocabulary, unused, so the other ids do not move.
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
_DIGITS = frozenset("0123456789")  # ASCII only: str.isdigit() also takes '²' and other scripts' digits


class Tokenizer:
    """Maps text to token ids and back. `<pad>` is id 0 and `<eos>` id 1 in the default vocabulary."""

    def __init__(self, vocab: tuple[str, ...] | list[str] = DEFAULT_VOCAB, numbers: int = 0):
        vocab = tuple(vocab)
        if len(set(vocab)) != len(vocab):
            raise MctError(f"tokenizer vocabulary has duplicate entries: {vocab!r}")
        missing = [s for s in SPECIALS if s not in vocab]
        if missing:
            raise MctError(f"tokenizer vocabulary lacks the special tokens {missing}")
        for token in vocab:
            if token not in SPECIALS and len(token) != 1:
                raise MctError(f"tokenizer vocabulary entry {token!r} is not a single character")
        if isinstance(numbers, bool) or not isinstance(numbers, int) or numbers < 0:
            raise MctError(f"tokenizer number tokens must be a whole number >= 0, got {numbers!r}")
        self.vocab = vocab
        self.numbers = numbers
        self.token_to_id = {tok: i for i, tok in enumerate(vocab)}
        self.pad_id = self.token_to_id[PAD]
        self.eos_id = self.token_to_id[EOS]

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + self.numbers

    def number_id(self, value: int) -> int:
        """Id of the number token of `value` (0 <= value < numbers)."""
        if not 0 <= value < self.numbers:
            raise MctError(f"number {value} has no token: this vocabulary has number tokens 0-{self.numbers - 1}"
                           if self.numbers else f"this vocabulary has no number tokens (asked for {value})")
        return len(self.vocab) + value

    def token_text(self, token_id: int) -> str:
        """The text of one token ("7", "+", "<eos>"; a number token's decimal value)."""
        return self.vocab[token_id] if token_id < len(self.vocab) else str(token_id - len(self.vocab))

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; raises MctError naming the first character outside the vocabulary."""
        ids: list[int] = []
        i = 0
        while i < len(text):
            if self.numbers and text[i] in _DIGITS:
                end = i
                while end < len(text) and text[end] in _DIGITS:
                    end += 1
                run = text[i:end]
                if len(run) > len(str(self.numbers - 1)) or run != str(int(run)) or int(run) >= self.numbers:
                    shown = run if len(run) <= 12 else run[:12] + "..."
                    raise MctError(f"number {shown!r} at position {i} is not a token of this vocabulary (its numbers "
                                   f"are 0-{self.numbers - 1}, written without leading zeros)")
                ids.append(self.number_id(int(run)))
                i = end
                continue
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
        return "".join(self.token_text(i) for i in ids if not (skip_pad and i == self.pad_id))

    def to_dict(self) -> dict:
        """Plain data for checkpoints ("numbers" only when there are number tokens)."""
        return {"type": "char", "vocab": list(self.vocab)} | ({"numbers": self.numbers} if self.numbers else {})

    @classmethod
    def from_dict(cls, data: dict) -> "Tokenizer":
        if not isinstance(data, dict) or data.get("type") != "char" or "vocab" not in data:
            raise MctError("tokenizer data is not an mct character tokenizer")
        return cls(tuple(data["vocab"]), data.get("numbers", 0))

    def __eq__(self, other) -> bool:
        return isinstance(other, Tokenizer) and (self.vocab, self.numbers) == (other.vocab, other.numbers)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size})"
