"""The arithmetic of every task: natural answers, step traces and carry statistics.

Operands are non-negative integers. Each `trace_*` function returns `(answer, steps, carries,
max_carry_chain)` in one pass, because generation calls it once per record and must be fast.

Step formats (documented with examples in docs/data-format.md):
- add: one step per column, least significant first: `"{a_i}+{b_i}+{carry_in}={carry_out}{digit}"`
  (7+5 with carry 1 -> `"7+5+1=13"`); a missing digit of the shorter operand is 0. With `width` w
  (zero-padded formats) there are at least w columns, so 2+1 with w=3 -> `2+1+0=03|0+0+0=00|0+0+0=00`.
- sub: the same on |larger| - |smaller| with borrows: `"{x_i}-{y_i}-{borrow_in}={borrow_out}{digit}"`
  (3-5 with borrow 0 -> `"3-5-0=18"`: borrow 1, digit 8); the answer gets "-" when a < b. In ten's
  complement (`complement=True`) the columns are those of a - b as written, never swapped: their digits are
  (a - b) mod 10^w and the top column's borrow is the sign, so no step needs to compare the operands first.
- mul: for each digit b_j of b (b zero-padded to the operand width), least significant first: from the
  second digit on the partial product a * b_j (len(a) + 1 digits), then the running sum a * (b mod
  10^(j+1)) (len(a) + len(b) digits), every number least significant digit first and zero-padded
  (123*45 -> `"51600"`, `"2940"`, `"53550"`). A digit of a partial product needs two digit products and
  a carry, a digit of a sum one column of an addition: the school method in the order a model can follow.
- mod: `"{a}+{b}={a+b}"` then `"{a+b}%{P}={(a+b) mod P}"`.

`carries` counts the carry (borrow) columns and `max_carry_chain` is the longest run of consecutive
carry columns. For mul they are summed / maximised over the running-sum additions (sum + a*b_j*10^j);
for mod they describe the addition a+b before the reduction.
"""

from __future__ import annotations

TASKS = ("add", "sub", "mul", "mod")
OPERATOR = {"add": "+", "sub": "-", "mul": "*", "mod": "+"}

# Column tables keyed by carry-in, then by the two digit characters "xy":
# value (step text, carry out).
_ADD: list[dict[str, tuple[str, int]]] = [{}, {}]
_SUB: list[dict[str, tuple[str, int]]] = [{}, {}]
for _c in (0, 1):
    for _x in range(10):
        for _y in range(10):
            _s = _x + _y + _c
            _ADD[_c][f"{_x}{_y}"] = (f"{_x}+{_y}+{_c}={_s // 10}{_s % 10}", _s // 10)
            _d = _x - _y - _c
            _borrow = int(_d < 0)
            _SUB[_c][f"{_x}{_y}"] = (f"{_x}-{_y}-{_c}={_borrow}{_d + 10 * _borrow}", _borrow)
del _c, _x, _y, _s, _d, _borrow


def _columns(table, x: int, y: int, width: int = 0) -> tuple[list[str], int, int]:
    """Steps, carry count and longest carry run of the column-wise operation `table` on x and y, over
    at least `width` columns (a padding column never carries, so the counts do not depend on it)."""
    rx = str(x)[::-1]
    ry = str(y)[::-1]
    if len(rx) != len(ry) or len(rx) < width:
        width = max(len(rx), len(ry), width)
        rx, ry = rx.ljust(width, "0"), ry.ljust(width, "0")
    carry = carries = run = chain = 0
    steps = []
    for pair in map(str.__add__, rx, ry):
        step, carry = table[carry][pair]
        steps.append(step)
        if carry:
            carries += 1
            run += 1
            if run > chain:
                chain = run
        else:
            run = 0
    return steps, carries, chain


def trace_add(a: int, b: int, width: int = 0) -> tuple[str, list[str], int, int]:
    steps, carries, chain = _columns(_ADD, a, b, width)
    return str(a + b), steps, carries, chain


def trace_sub(a: int, b: int, width: int = 0, complement: bool = False) -> tuple[str, list[str], int, int]:
    """The borrow counts are those of |larger| - |smaller| in both step formats (a record's meta describes
    the problem, not its format); `complement` steps are the columns of a - b as written."""
    x, y = (a, b) if a >= b else (b, a)
    steps, carries, chain = _columns(_SUB, x, y, width)
    if complement and a < b:
        steps = _columns(_SUB, a, b, width)[0]
    return str(a - b), steps, carries, chain


def add_carry_stats(x: int, y: int) -> tuple[int, int]:
    """(carries, max_carry_chain) of the column addition x + y."""
    _, carries, chain = _columns(_ADD, x, y)
    return carries, chain


def trace_mul(a: int, b: int, width: int = 0) -> tuple[str, list[str], int, int]:
    """Steps of a*b with operands zero-padded to `width` digits (0 = as they are): see the module docstring."""
    a_len, b_text = max(len(str(a)), width), str(b).rjust(width, "0")
    sum_width = a_len + len(b_text)
    steps: list[str] = []
    total = carries = chain = 0
    for j, ch in enumerate(reversed(b_text)):
        partial = a * (ord(ch) - 48)
        if j:
            steps.append(str(partial).rjust(a_len + 1, "0")[::-1])
            c, run = add_carry_stats(total, partial * 10**j)
            carries += c
            chain = max(chain, run)
        total += partial * 10**j
        steps.append(str(total).rjust(sum_width, "0")[::-1])
    return str(a * b), steps, carries, chain


def trace_mod(a: int, b: int, modulus: int) -> tuple[str, list[str], int, int]:
    total = a + b
    carries, chain = add_carry_stats(a, b)
    return str(total % modulus), [f"{a}+{b}={total}", f"{total}%{modulus}={total % modulus}"], carries, chain


def trace(task: str, a: int, b: int, modulus: int | None = None, width: int = 0,
          complement: bool = False) -> tuple[str, list[str], int, int]:
    """(natural answer, steps, carries, max_carry_chain) of the problem (a, b) of `task`; `width` is the
    operand width of a zero-padded format (the least number of add/sub column steps; mul's step widths);
    `complement`: sub's steps in ten's complement (the columns of a - b as written)."""
    if task == "add":
        return trace_add(a, b, width)
    if task == "sub":
        return trace_sub(a, b, width, complement)
    if task == "mul":
        return trace_mul(a, b, width)
    if task == "mod":
        if modulus is None:
            raise ValueError("the mod task needs a modulus")
        return trace_mod(a, b, modulus)
    raise ValueError(f"unknown task {task!r}")


def tracer(task: str, modulus: int | None = None, width: int = 0, complement: bool = False):
    """The `(a, b) -> (answer, steps, carries, max_carry_chain)` function of `task` (for hot loops)."""
    if task == "mod":
        return lambda a, b: trace_mod(a, b, modulus)
    if task == "sub":
        return lambda a, b: trace_sub(a, b, width, complement)
    column_trace = {"add": trace_add, "mul": trace_mul}[task]
    return lambda a, b: column_trace(a, b, width)


def solve(task: str, a: int, b: int, modulus: int | None = None) -> str:
    """The natural-order answer ("46", "-8")."""
    if task == "add":
        return str(a + b)
    if task == "sub":
        return str(a - b)
    if task == "mul":
        return str(a * b)
    if task == "mod":
        return str((a + b) % modulus)
    raise ValueError(f"unknown task {task!r}")


def steps(task: str, a: int, b: int, modulus: int | None = None, width: int = 0,
          complement: bool = False) -> list[str]:
    return trace(task, a, b, modulus, width, complement)[1]


def carry_stats(task: str, a: int, b: int, modulus: int | None = None) -> tuple[int, int]:
    """(carries, max_carry_chain) as written in a record's meta."""
    _, _, carries, chain = trace(task, a, b, modulus)
    return carries, chain
