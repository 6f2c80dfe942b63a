"""ListOps (Nangia & Bowman, 2018) generated with the Long Range Arena settings.

An expression is a value 0-9 or ``[OP a1 ... ak ]`` with OP one of MIN, MAX, MED (median,
rounded down when k is even, as LRA's ``int(np.median(...))``), SM (sum mod 10); 2 <= k <= 10
arguments; depth <= 10. Generation follows LRA's process: a node above the maximum depth is an
operator with probability 0.25 (else a value), a node at the maximum depth is a value, an
operator draws its argument count uniformly in [2, 10] and its operator uniformly. Trees whose
token count (operators, values and closing brackets: the LRA length) falls outside
[min_length, max_length] are rejected; generation stops as soon as a tree exceeds max_length,
which rejects the same trees as generating it whole.

The written form keeps the brackets as tokens (``[MAX 2 9 [MIN 4 7 ] 0 ]``); LRA's files also hold
the parentheses of its binarised trees, which we leave out (they carry no information and are not
counted in LRA's length). Label = the value of the expression (10 classes), computed by the
reference evaluator ``evaluate`` on the written tokens.
"""
from __future__ import annotations

import random

import numpy as np
import torch

from effx.data.lra import TokenDataset, check_split, pad_sequences
from effx.errors import ParameterError

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
CLOSE = "]"
PAD = "<pad>"
#: token id = position; 0 is padding
VOCAB: tuple[str, ...] = (PAD, *(str(d) for d in range(10)), *OPERATORS, CLOSE)
TOKEN_ID = {tok: i for i, tok in enumerate(VOCAB)}
NUM_CLASSES = 10
MAX_ARGS, MAX_DEPTH, OPERATOR_P = 10, 10, 0.25
LRA_SIZES = {"train": 96_000, "test": 2_000}


class _TooLong(Exception):
    pass


def _tree(rng: random.Random, depth: int, budget: list[int]):
    """A random expression as nested lists; budget[0] = tokens still allowed (raises when < 0)."""
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLong
    if depth >= MAX_DEPTH or rng.random() >= OPERATOR_P:
        return str(rng.randrange(10))
    op = OPERATORS[rng.randrange(len(OPERATORS))]
    budget[0] -= 1                                        # the closing bracket
    args = [_tree(rng, depth + 1, budget) for _ in range(rng.randint(2, MAX_ARGS))]
    return [op, *args]


def _tokens(tree) -> list[str]:
    if isinstance(tree, str):
        return [tree]
    out = [tree[0]]
    for arg in tree[1:]:
        out += _tokens(arg)
    return out + [CLOSE]


def generate_expression(rng: random.Random, min_length: int, max_length: int,
                        max_tries: int = 1_000_000) -> list[str]:
    """Tokens of one random expression with min_length <= len <= max_length (LRA's process)."""
    for _ in range(max_tries):
        try:
            tokens = _tokens(_tree(rng, 1, [max_length]))
        except _TooLong:
            continue
        if len(tokens) >= min_length:
            return tokens
    raise RuntimeError(f"no ListOps expression of {min_length}-{max_length} tokens in {max_tries} tries")


def _apply(op: str, args: list[int]) -> int:
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[MED":
        s = sorted(args)
        mid = len(s) // 2
        return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) // 2
    if op == "[SM":
        return sum(args) % 10
    raise ValueError(f"unknown ListOps operator {op!r}")


def evaluate(expression: str | list[str]) -> int:
    """Value of a ListOps expression, e.g. evaluate('[MAX 2 9 [MIN 4 7 ] 0 ]') == 9."""
    tokens = expression.split() if isinstance(expression, str) else list(expression)
    stack: list[list] = []                               # open operators with their arguments
    result = None
    for tok in tokens:
        if tok in OPERATORS:
            stack.append([tok])
        elif tok == CLOSE:
            if not stack or len(stack[-1]) < 2:
                raise ValueError(f"unbalanced or empty operator in {' '.join(tokens)!r}")
            op, *args = stack.pop()
            value = _apply(op, args)
            if stack:
                stack[-1].append(value)
            elif result is None:
                result = value
            else:
                raise ValueError("more than one top-level expression")
        elif tok.isdigit() and len(tok) == 1:
            if stack:
                stack[-1].append(int(tok))
            elif result is None:
                result = int(tok)
            else:
                raise ValueError("more than one top-level expression")
        else:
            raise ValueError(f"unknown ListOps token {tok!r}")
    if stack or result is None:
        raise ValueError(f"incomplete ListOps expression {' '.join(tokens)!r}")
    return result


def encode(tokens: list[str]) -> np.ndarray:
    return np.array([TOKEN_ID[t] for t in tokens], dtype=np.int64)


def decode(ids) -> list[str]:
    return [VOCAB[int(i)] for i in ids if int(i) != 0]


def load_listops(split: str, length: int, n: int | None = None, seed: int = 0,
                 min_length: int | None = None, max_length: int | None = None) -> TokenDataset:
    """`n` expressions of min_length..max_length tokens (defaults: length // 4 .. length),
    padded to `length`. Splits are independent streams of (seed, split). n=None: LRA's sizes
    (96k train, 2k test; slow to generate)."""
    split = check_split(split)
    max_length = length if max_length is None else int(max_length)
    min_length = max(1, length // 4) if min_length is None else int(min_length)
    if not 1 <= min_length <= max_length <= length:
        raise ParameterError("min_length, max_length", (min_length, max_length),
                             f"1 <= min_length <= max_length <= length={length}")
    n = LRA_SIZES[split] if n is None else int(n)
    if n < 1:
        raise ParameterError("n", n, "an integer >= 1")
    rng = random.Random(f"effx-listops:{split}:{seed}")
    exprs = [generate_expression(rng, min_length, max_length) for _ in range(n)]
    ids, mask = pad_sequences([encode(e) for e in exprs], length)
    labels = torch.tensor([evaluate(e) for e in exprs], dtype=torch.long)
    return TokenDataset(ids, mask, labels, len(VOCAB), NUM_CLASSES, "listops")
