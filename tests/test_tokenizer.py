import pytest
from hypothesis import given
from hypothesis import strategies as st

from mct.errors import MctError
from mct.tokenizer import ANSWER_MARK, DEFAULT_CHARS, EOS, PAD, STEP_SEP, Tokenizer

tokenizer = Tokenizer()
pieces = st.sampled_from(list(DEFAULT_CHARS) + [EOS, PAD])


@given(st.lists(pieces, max_size=60))
def test_encode_decode_round_trip(tokens):
    text = "".join(tokens)
    ids = tokenizer.encode(text)
    assert len(ids) == len(tokens)
    assert tokenizer.decode(ids, skip_pad=False) == text


@given(st.text(alphabet="0123456789+-*%=|#", max_size=40))
def test_one_id_per_character(text):
    assert len(tokenizer.encode(text)) == len(text)


def test_specials_and_markers_are_in_the_vocabulary():
    assert tokenizer.pad_id == 0 and tokenizer.eos_id == 1
    for token in (STEP_SEP, ANSWER_MARK, "+", "-", "*", "%", "="):
        assert token in tokenizer.vocab


def test_decode_skips_padding_by_default():
    ids = tokenizer.encode("12+3=") + [tokenizer.pad_id] * 3
    assert tokenizer.decode(ids) == "12+3="


def test_unknown_character_names_character_position_and_vocabulary():
    with pytest.raises(MctError) as info:
        tokenizer.encode("12+3x=")
    message = str(info.value)
    assert "'x'" in message and "position 4" in message and "0123456789" in message


def test_lone_angle_bracket_is_unknown():
    with pytest.raises(MctError, match="'<' at position 0"):
        tokenizer.encode("<eo")


def test_serialises_to_plain_data():
    data = tokenizer.to_dict()
    assert data["vocab"] == list(tokenizer.vocab)
    assert Tokenizer.from_dict(data) == tokenizer


@pytest.mark.parametrize("bad", [None, {}, {"type": "bpe", "vocab": []}, {"type": "char"}])
def test_from_dict_refuses_foreign_data(bad):
    with pytest.raises(MctError):
        Tokenizer.from_dict(bad)


def test_vocabulary_must_hold_specials_and_single_characters():
    with pytest.raises(MctError, match="special"):
        Tokenizer(("a", "b"))
    with pytest.raises(MctError, match="single character"):
        Tokenizer((PAD, EOS, "ab"))


# --- number tokens (the mod task's one token per residue) ---------------------------------------------
residues = Tokenizer(numbers=113)
residue_pieces = st.one_of(st.sampled_from(["+", "=", "#", EOS, PAD]), st.integers(0, 112).map(str))


@given(st.lists(residue_pieces, max_size=30))
def test_number_tokens_round_trip(pieces):
    # two numbers in a row would read as one longer number: keep a separator between them
    tokens = [p for i, p in enumerate(pieces) if not (p.isdigit() and i and pieces[i - 1].isdigit())]
    text = "".join(tokens)
    ids = residues.encode(text)
    assert len(ids) == len(tokens)
    assert residues.decode(ids, skip_pad=False) == text
    assert all(residues.token_text(i) == t for i, t in zip(ids, tokens))


def test_a_residue_problem_is_seven_tokens_and_keeps_the_other_ids():
    ids = residues.encode("60+60=#7<eos>")
    assert ids == [residues.number_id(60), tokenizer.token_to_id["+"], residues.number_id(60),
                   tokenizer.token_to_id["="], tokenizer.token_to_id["#"], residues.number_id(7), tokenizer.eos_id]
    assert residues.vocab_size == len(residues) == tokenizer.vocab_size + 113
    assert residues.number_id(0) == tokenizer.vocab_size


@pytest.mark.parametrize("text,why", [("113+0=", "'113' at position 0"), ("007+1=", "'007' at position 0"),
                                      ("1+2x=", "'x' at position 3"), ("1+\u00b2=", "'\u00b2' at position 2"),
                                      ("9" * 5000 + "+1=", "'999999999999...' at position 0")])
def test_numbers_outside_the_residues_are_refused(text, why):
    with pytest.raises(MctError, match=why):
        residues.encode(text)


def test_number_tokens_serialise_and_a_plain_vocabulary_stays_as_it_was():
    assert Tokenizer.from_dict(residues.to_dict()) == residues != tokenizer
    assert "numbers" not in tokenizer.to_dict()
    with pytest.raises(MctError, match="number tokens must be a whole number"):
        Tokenizer(numbers=-1)
    with pytest.raises(MctError, match="no number tokens"):
        tokenizer.number_id(0)
