"""The text format shared by data generation, training, evaluation and generation.

    prompt  "12+34="
    target  "".join(step + "|" for step in steps) + "#" + ordered_answer + "<eos>"

The answer marker `#` is always present. `answer_order="reversed"` writes the sign (if any) first and
then the digits least significant first ("46" -> "64", "-123" -> "-321"); "plain" writes the natural
answer. A `DataFormat` is stored in every checkpoint (`to_dict()`), so a model's format never depends
on the code's defaults.

Zero-padded format (`operand_width` w > 0): operands are written with leading zeros to w digits
("012+034=") and the answer is zero-padded to the task's answer width (`answer_width`: add w+1, sub w
after the sign, mul 2w, mod the digits of modulus-1) before it is ordered, so every digit sits at a
fixed position: 12+34 with w=3, reversed -> "#6400<eos>". Add/sub steps are written for every padded
column ("2+4+0=06|1+3+0=04|0+0+0=00|"), so their count and positions are fixed too. Padded subtraction
always writes the sign ("+" or "-", first in both orders), so a negative answer does not shift the
digits: 34-12 -> "#+220<eos>". Longer operands (OOD) are written as they are. `parse_completion` gives
the natural answer without leading zeros.

Pairs padded to the longer operand (`pad_to_longer`, add and sub): each problem is padded as above to its
own width w = the longer operand's digits ("7+1234=" -> "0007+1234=", the answer 1241 padded to w+1
digits and reversed: "#14210<eos>"), so both operands hold a digit in every column and no length is
capped (Cho et al. 2024 pad the same way for position coupling). Steps are the natural ones, which
already cover w columns.

One token per residue (`residue_tokens`, mod only): the text is the natural one ("60+60=#7<eos>"), and
the format's tokenizer (`DataFormat.tokenizer()`) reads each number as one token, so a problem is seven
tokens and the answer a single one, as in the grokking papers.

Ten's complement subtraction (`sub_complement`, sub with reversed answers): the answer is the w digits
of (a - b) mod 10^w (w: the padded width, or the longer operand's digits), least significant first, then the
sign: "+", or "-" when the top column borrows (a < b). 12-345 (w = 3): 12 - 345 = -333 = 667 - 1000 ->
"#766-<eos>". Every token then depends on its own column and the borrow from the column below, as in
addition; the sign-first format needs the comparison of the whole operands before the first digit. Its
steps are the columns of a - b as written ("2-5-0=17|1-4-1=16|0-3-1=16|#766-<eos>"), where the sign-first
steps subtract the smaller operand from the larger, so their first step already needs the comparison.
`parse_completion` gives the natural answer.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace

from mct.data import tasks
from mct.errors import MctError
from mct.tokenizer import ANSWER_MARK, EOS, PAD, STEP_SEP, Tokenizer

ANSWER_ORDERS = ("reversed", "plain")
PROMPT = re.compile(r"^(\d+)([+\-*])(\d+)=$")  # a OP b=, digits as written
_NUMBER = re.compile(r"^[-+]?\d+$")
_COMPLEMENT = re.compile(r"^\d+[-+]$")  # sub_complement: digits, then the sign
_LONGER_NUMBERS = {  # what a user who asks a model for numbers longer than it reads can train instead
    "add": "train a length-generalising model (configs/add-coupled.toml)",
    "sub": "train a length-generalising model (configs/sub-coupled.toml)",
}


def longer_numbers_fix(task: str) -> str:
    """What to train for numbers longer than a model learned (a padded model's error, `mct generate`'s note)."""
    return _LONGER_NUMBERS.get(task, "train with a larger data.max_digits")


def slow_format_fix(task: str, use_steps: bool, unpadded_by_position: bool = False,
                    step_masking_mode: str = "mask_steps", no_positions: bool = False,
                    plain_answers: bool = False) -> str | None:
    """What else to train when a run of this format stopped short of its target (measured in
    docs/recipes.md), said after "train on with ..."; None where training on is the whole answer.
    `unpadded_by_position`: add or sub operands written without padding, read by a model whose positions
    count tokens (learned, RoPE or none) rather than places; `no_positions`: a model without positions;
    `plain_answers`: answers written most significant digit first."""
    steps_supplied = use_steps and step_masking_mode == "mask_steps"  # the steps line up the digits already
    if task in ("add", "sub") and not steps_supplied and no_positions:
        return ("or start again with --max-steps 8000 or --layers 3 (a model without positions counts its way to "
                "each digit through the causal mask: the default's model reached the target at step 6,220)")
    if task in ("add", "sub") and not steps_supplied and unpadded_by_position:
        return ("or start again with --max-steps 3000 (positions that count tokens find the digits of unpadded "
                "operands slowly: a `mct gen add` folder reached the target at step 1,920, sub steps written "
                f"by the model at step 1,015), or zero-pad the operands (`mct gen {task} --pad`, the default's "
                "format: about 250 steps)")
    if task in ("add", "sub") and not steps_supplied and plain_answers:
        return ("or start again with --max-steps 3000 (a plain answer's first digit needs the carries of every "
                "column below it: the default with plain answers reached the target at step 875, hard 100%; "
                "resumed from 500 to 1,000 steps it missed 100+999=), or write answers reversed "
                "(data.answer_order = reversed, the default)")
    if task == "mul" and not use_steps:
        return ("or train with steps, --set data.use_steps=true or configs/mul3.toml (minutes): a direct "
                "multiplication answer learns slowly (configs/mul3-direct.toml, 600k parameters: 100% of its "
                "1-3 digit test split after about 23,000 steps, 20 minutes on 2 CPU threads)")
    if task == "mod":
        return "or train configs/mod113.toml (one token per residue; 100% in about 2,000 steps)"
    return None


MAX_OPERAND_DIGITS = 4000  # Python converts at most 4,300 digits of text to int by default


def order_answer(natural: str, answer_order: str) -> str:
    """The answer as the model writes it: reversed = sign first, then digits least significant first."""
    if answer_order == "plain":
        return natural
    if natural[:1] in ("-", "+"):
        return natural[0] + natural[:0:-1]
    return natural[::-1]


def natural_answer(ordered: str, answer_order: str) -> str:
    """Inverse of `order_answer` (reversing is its own inverse)."""
    return order_answer(ordered, answer_order)


def strip_zeros(natural: str) -> str:
    """A number without leading zeros or '+': "0046" -> "46", "-022" -> "-22", "+022" -> "22", "000" -> "0"
    ("-000" -> "-0")."""
    sign = natural[:1] if natural[:1] in ("-", "+") else ""
    return sign.replace("+", "") + (natural[len(sign):].lstrip("0") or "0")


def build_target(steps: list[str], ordered_answer: str) -> str:
    """`"".join(step + "|" for step in steps) + "#" + ordered_answer + "<eos>"`."""
    if steps:
        return STEP_SEP.join(steps) + STEP_SEP + ANSWER_MARK + ordered_answer + EOS
    return ANSWER_MARK + ordered_answer + EOS


@dataclass(frozen=True)
class ParsedCompletion:
    """What a model wrote after a prompt: the answer in natural order (None when there is none), the
    steps before the answer marker, and why the text is malformed (None when it is well formed)."""

    answer: str | None
    steps: list[str] = field(default_factory=list)
    malformed: str | None = None


@dataclass(frozen=True)
class DataFormat:
    """Task and text format of a data set or model. `modulus` is used by the mod task only (None else)."""

    task: str = "add"
    answer_order: str = "reversed"
    use_steps: bool = False
    modulus: int | None = None
    operand_width: int = 0  # 0 = natural numbers; w > 0 = operands zero-padded to w digits
    pad_to_longer: bool = False  # add/sub: each problem's shorter operand zero-padded to the longer's digits
    sub_complement: bool = False  # sub: digits of (a - b) mod 10^w, then the sign (the top column's borrow)
    residue_tokens: bool = False  # mod: one token per residue (the tokenizer's number tokens), not per digit

    def __post_init__(self):
        if self.task not in tasks.TASKS:
            raise MctError(f"unknown task {self.task!r}; use one of {', '.join(tasks.TASKS)}")
        if self.answer_order not in ANSWER_ORDERS:
            raise MctError(f"unknown answer order {self.answer_order!r}; use reversed or plain")
        if self.task == "mod" and (not isinstance(self.modulus, int) or self.modulus < 2):
            raise MctError(f"the mod task needs a modulus of at least 2, got {self.modulus!r}")
        if self.task != "mod" and self.modulus is not None:
            object.__setattr__(self, "modulus", None)
        if isinstance(self.operand_width, bool) or not isinstance(self.operand_width, int) or self.operand_width < 0:
            raise MctError(f"operand_width must be a whole number >= 0 (0 = no padding), got {self.operand_width!r}")
        if self.pad_to_longer and (self.operand_width or self.task not in ("add", "sub")):
            raise MctError("pad_to_longer applies to add and sub without a fixed operand width (pad_operands)")
        if self.sub_complement and not self.complement_applies:
            raise MctError("sub_complement applies to sub with reversed answers")
        if self.residue_tokens and (self.task != "mod" or self.pads or self.use_steps or self.answer_order != "plain"):
            raise MctError("residue_tokens (one token per residue) applies to the mod task with answer_order = "
                           "\"plain\", no padding (pad_operands = false) and no steps: a number token has no digits "
                           "to pad or order, and the steps' sums exceed the modulus")

    # --- conversions -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain data (stored in checkpoints under "data_format" and in manifests under "format")."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DataFormat":
        if not isinstance(data, dict) or "task" not in data:
            raise MctError("data format must be a table with at least a 'task' entry")
        fields = ("task", "answer_order", "use_steps", "modulus", "operand_width", "pad_to_longer", "sub_complement",
                  "residue_tokens")
        known = {k: data[k] for k in fields if k in data}
        return cls(**known)

    @classmethod
    def from_config(cls, data_config) -> "DataFormat":
        """The format a `DataConfig` describes. `data.sub_complement` unset (none) means ten's complement
        wherever it applies: with the sign first the first answer token compares the whole operands, and
        padded subtraction learned in three times the steps and missed signs of near ties (docs/recipes.md)."""
        fmt = cls(
            task=data_config.task,
            answer_order=data_config.answer_order,
            use_steps=bool(data_config.use_steps),
            modulus=data_config.modulus if data_config.task == "mod" else None,
            operand_width=data_config.max_digits if getattr(data_config, "pad_operands", False) else 0,
            pad_to_longer=bool(getattr(data_config, "pad_to_longer", False)),
            residue_tokens=bool(getattr(data_config, "residue_tokens", False)),
        )
        chosen = getattr(data_config, "sub_complement", False)
        return replace(fmt, sub_complement=fmt.complement_applies if chosen is None else bool(chosen))

    def tokenizer(self) -> Tokenizer:
        """The tokenizer that writes this format: the character vocabulary, plus a number token per residue
        when `residue_tokens`."""
        return Tokenizer(numbers=self.modulus if self.residue_tokens else 0)

    # --- problems -> text ------------------------------------------------------------------------
    @property
    def operator(self) -> str:
        return tasks.OPERATOR[self.task]

    @property
    def pads(self) -> bool:
        """Whether operands are written zero-padded (to a fixed width or to the longer one)."""
        return bool(self.operand_width or self.pad_to_longer)

    @property
    def complement_applies(self) -> bool:
        """Whether ten's complement (`sub_complement`) can write this format: sub with reversed answers,
        with or without steps (padded or not: the width w is the longer operand's, or the fixed padding)."""
        return self.task == "sub" and self.answer_order == "reversed"

    def width(self, operands: tuple[int, int]) -> int:
        """The digits each operand of this problem is padded to (0 = written as it is)."""
        if self.pad_to_longer:
            return max(len(str(n)) for n in operands)
        return self.operand_width

    @property
    def answer_width(self) -> int:
        """Digits the answer is zero-padded to (without sub's sign) in a fixed-width format: add w+1, sub w,
        mul 2w, mod the digits of modulus-1; 0 when operands are not padded to a fixed width."""
        return self.answer_width_for(self.operand_width)

    def answer_width_for(self, w):
        """`answer_width` for operands padded to w digits (0 = not padded; add/sub: w may be a tensor of
        per-problem widths, as the batch path pads each pair to its longer operand)."""
        if isinstance(w, int) and not w:
            return 0
        if self.task == "add":
            return w + 1
        if self.task == "sub":
            return w
        if self.task == "mul":
            return 2 * w
        return len(str(self.modulus - 1))

    def prompt(self, operands: tuple[int, int]) -> str:
        """"12+34=", or with operand_width 3 "012+034=" (an operand longer than the width as it is)."""
        a, b = operands
        w = self.width(operands)
        if w:
            return f"{a:0{w}d}{self.operator}{b:0{w}d}="
        return f"{a}{self.operator}{b}="

    def render_prompt(self, prompt: str) -> str:
        """Any prompt of this task, natural or padded ("12+34=", "012+034=") -> the prompt as a model of this
        format reads it. MctError when an operand is longer than a padded format's width: such a model reads
        its digits at fixed positions and has no position for a longer number."""
        operands = self.operands_from_prompt(prompt)
        longest = max(len(str(n)) for n in operands)
        if self.operand_width and self.task != "mod" and longest > self.operand_width:  # mod: any residue
            fix = longer_numbers_fix(self.task)
            raise MctError(f"prompt {prompt.strip()!r} has an operand of {longest} digits but this model reads "
                           f"operands zero-padded to {self.operand_width} digits; for longer numbers {fix}")
        return self.prompt(operands)

    def model_prompt(self, prompt: str) -> str:
        """A prompt as written ("12+34=", "060+060=") -> the prompt a model of this format reads: rendered
        for a padded format ("012+034=") and for one token per residue ("60+60=": a residue is one token,
        without leading zeros); as written for every other format."""
        return self.render_prompt(prompt) if self.pads or self.residue_tokens else prompt

    def solve(self, operands: tuple[int, int]) -> str:
        """The natural-order answer ("46", "-8")."""
        return tasks.solve(self.task, operands[0], operands[1], self.modulus)

    def answer(self, operands: tuple[int, int]) -> str:
        """The natural-order answer (same as `solve`)."""
        return self.solve(operands)

    def steps(self, operands: tuple[int, int]) -> list[str]:
        """The step trace (also when this format does not train on steps): a zero-padded format writes
        one add/sub column step per padded column, so every step sits at a fixed position, and pads mul's
        partial products and running sums to the operand width; ten's complement subtraction writes the
        columns of a - b as written."""
        return tasks.steps(self.task, operands[0], operands[1], self.modulus, self.width(operands), self.sub_complement)

    def order_answer(self, natural: str) -> str:
        """Ordering only (no padding): reversed or plain."""
        return order_answer(natural, self.answer_order)

    @property
    def signed_answer(self) -> bool:
        """Padded subtraction writes a sign before every answer ('+' or '-'), so that each answer digit
        sits at the same position whatever the sign (without it a negative answer shifts every digit)."""
        return self.task == "sub" and self.pads

    def pad_answer(self, natural: str, operands: tuple[int, int] | None = None) -> str:
        """The natural answer zero-padded to the answer width ("-22" -> "-022", "22" -> "+022" for sub, w=3);
        as is when unpadded. `operands` give the width where it depends on the problem (pad_to_longer)."""
        if self.pad_to_longer and operands is None:
            raise ValueError("pad_to_longer pads each answer to its problem's width: pass the operands")
        width = self.answer_width_for(self.width(operands)) if operands is not None else self.answer_width
        if not width:
            return natural
        if natural.startswith("-"):
            return "-" + natural[1:].rjust(width, "0")
        return ("+" if self.signed_answer else "") + natural.rjust(width, "0")

    def ordered_answer(self, natural: str, operands: tuple[int, int] | None = None) -> str:
        """The answer as it appears in the target: padded (when the format pads), then ordered."""
        if self.sub_complement:
            if operands is None:
                raise ValueError("sub_complement writes each answer in its problem's width: pass the operands")
            w = max(self.width(operands), *(len(str(n)) for n in operands))  # longer operands (OOD) as they are
            return f"{int(natural) % 10**w:0{w}d}"[::-1] + ("-" if natural.startswith("-") else "+")
        return order_answer(self.pad_answer(natural, operands), self.answer_order)

    def target(self, operands: tuple[int, int]) -> str:
        """Exactly what the model is trained to write after the prompt."""
        answer, steps, _, _ = tasks.trace(self.task, operands[0], operands[1], self.modulus, self.width(operands),
                                          self.sub_complement)
        return build_target(steps if self.use_steps else [], self.ordered_answer(answer, operands))

    def carry_stats(self, operands: tuple[int, int]) -> tuple[int, int]:
        """(carries, max_carry_chain): carry/borrow columns and the longest run of them (see tasks.py)."""
        return tasks.carry_stats(self.task, operands[0], operands[1], self.modulus)

    # --- text -> problems ------------------------------------------------------------------------
    def operands_from_prompt(self, prompt: str) -> tuple[int, int]:
        """(a, b) of a prompt such as "12+34="; MctError when it is not a problem of this task."""
        match = PROMPT.match(prompt.strip())
        if match is not None and max(len(match.group(1)), len(match.group(3))) > MAX_OPERAND_DIGITS:
            raise MctError(f"prompt has an operand of {max(len(match.group(1)), len(match.group(3))):,} digits; "
                           f"mct reads operands of at most {MAX_OPERAND_DIGITS:,} digits")
        if match is None or match.group(2) != self.operator:
            raise MctError(
                f"prompt {prompt!r} is not {'an' if self.task[0] in 'aeiou' else 'a'} {self.task} problem; write it like "
                f"'12{self.operator}34=' (non-negative whole numbers)"
            )
        return int(match.group(1)), int(match.group(3))

    def parse_completion(self, text: str) -> ParsedCompletion:
        """Steps and natural-order answer of the text a model generated after the prompt.

        Pads are ignored and the text ends at the first `<eos>`. Malformed reasons: "no <eos>",
        "no answer marker", "more than one answer marker", "unfinished step", "empty answer",
        "answer is not a number". When operands are padded leading zeros are dropped ("0046" -> "46",
        "-022" -> "-22", "000" -> "0").
        """
        text = text.replace(PAD, "")
        end = text.find(EOS)
        malformed = None
        if end >= 0:
            text = text[:end]
        else:
            malformed = "no <eos>"
        mark = text.find(ANSWER_MARK)
        if mark < 0:
            pieces = text.split(STEP_SEP)
            return ParsedCompletion(None, pieces[:-1], "no answer marker")
        steps_text, ordered = text[:mark], text[mark + 1:]
        steps = steps_text.split(STEP_SEP)[:-1] if steps_text else []
        if ANSWER_MARK in ordered:
            return ParsedCompletion(None, steps, "more than one answer marker")
        if steps_text and not steps_text.endswith(STEP_SEP):
            malformed = malformed or "unfinished step"
        if not ordered:
            return ParsedCompletion(None, steps, "empty answer")
        if self.sub_complement:
            if not _COMPLEMENT.match(ordered):
                return ParsedCompletion(None, steps, "answer is not a number")
            digits = ordered[-2::-1]  # reversed digits before the sign, back in natural order
            value = int(digits) - (10 ** len(digits) if ordered[-1] == "-" else 0)
            return ParsedCompletion(str(value), steps, malformed)
        if not _NUMBER.match(ordered):
            return ParsedCompletion(None, steps, "answer is not a number")
        natural = natural_answer(ordered, self.answer_order)
        if self.pads:
            natural = strip_zeros(natural)
        return ParsedCompletion(natural, steps, malformed)


def is_token(ids, tokenizer, chars: str):
    """Whether each token id is one of the tokens `chars` (a bool tensor of ids' shape).

    Compares with Python ints: a tensor of the wanted ids would be copied from the host, which CUDA
    graph capture forbids (the training step, `GraphedStep`, computes place ids). Consecutive ids (the
    digits) make one range test."""
    runs: list[list[int]] = []  # [first, last] of each run of consecutive ids
    for value in sorted(tokenizer.token_to_id[c] for c in chars):
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    found = None
    for first, last in runs:
        hit = ids == first if first == last else (ids >= first) & (ids <= last)
        found = hit if found is None else found | hit
    return found


def place_ids(input_ids, tokenizer, coupled: bool = False):
    """Place-value position ids (Abacus, McLeish et al. 2024) of token rows [B, T] -> [B, T] long.

    A digit of a number before '=' gets its place counted from the number's least significant digit
    (1 = units), so "123+45=" -> 3 2 1 0 2 1 0; a digit after the answer marker '#' (answers written
    least significant digit first) gets its index in the answer (1, 2, 3...), so operand and answer
    digits of the same place share an id; every other token (operators, '=', '#', a sign, <eos>,
    padding) gets 0. Ids of a row depend only on its own tokens up to each answer digit, so the id of
    a generated token is known when it is fed back (KV-cache decoding included). One implementation for
    data, training, evaluation and generation.

    `coupled` (position coupling, Cho et al. 2024) also gives the operator and '=' one shared id, one
    above the longest operand's top place, so they sit "above" the numbers they join."""
    import torch

    ids = torch.as_tensor(input_ids)
    is_digit = is_token(ids, tokenizer, "0123456789").long()
    after_eq = torch.cumsum((ids == tokenizer.token_to_id["="]).long(), -1) > 0
    after_mark = torch.cumsum((ids == tokenizer.token_to_id[ANSWER_MARK]).long(), -1) > 0

    def run_count(flags):  # 1, 2, 3... along each run of digits (reset by any other token)
        counts = torch.cumsum(flags, -1)
        reset = torch.cummax(torch.where(flags == 0, counts, 0), -1).values
        return counts - reset

    from_right = run_count(is_digit.flip(-1)).flip(-1)  # places of numbers written most significant first
    answer = torch.cumsum(is_digit * after_mark, -1)
    places = torch.where(after_mark, answer * is_digit, torch.where(after_eq, 0, from_right))
    if coupled:
        in_prompt = ~after_eq | (ids == tokenizer.token_to_id["="])
        top = torch.where(in_prompt, places, 0).max(-1, keepdim=True).values + 1
        joiner = is_token(ids, tokenizer, "+-*=")
        places = torch.where(joiner & in_prompt, top, places)
    return places


def shifted_place_ids(input_ids, tokenizer, offset, coupled: bool = False):
    """`place_ids` with every place moved up by `offset` ([B, 1] or a number), as in training.

    The answer marker '#' and an answer's sign move too although their id is 0: they are the answer's
    place 0, the tokens that predict the units digit, so they must stay one below the units whatever the
    offset (at offset 0 they are 0 like any other non-digit). Ids that stay 0 name no place."""
    import torch

    ids = torch.as_tensor(input_ids)
    places = place_ids(ids, tokenizer, coupled=coupled)
    mark = ids == tokenizer.token_to_id[ANSWER_MARK]
    sign = is_token(ids, tokenizer, "+-")
    moves = (places > 0) | mark | (sign & (torch.cumsum(mark.long(), -1) > 0))  # a sign after '#
    return torch.where(moves, places + offset, 0)
