"""Character-level text datasets: Tiny Shakespeare (karpathy/char-rnn's ``input.txt``).

The text is read as UTF-8, every distinct character of the *whole* text becomes one token (ids in
sorted character order, nanoGPT's convention: 65 for Tiny Shakespeare), and the characters are split
by position: the first 90 % train, the last 10 % validation. Each split is cut into windows of
``seq_len + 1`` characters; ``x`` is a window without its last character and ``y`` the same window
without its first, so ``y[:, t]`` is the character that follows ``x[:, t]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from search_spaces.errors import InputError
from supernets.data._split import check_int, check_limit, child_rngs
from supernets.data.registry import TextSplits, data_root_for, missing_dataset, register_dataset

TRAIN_FRACTION = 0.9
MAX_SEQ_LEN = 4096
_MAX_ELEMENTS = 1 << 28  # token ids per split and tensor (2 GiB of int64 for x, again for y): refuse beyond
_NAMES = ("input.txt", "tinyshakespeare.txt", "tiny-shakespeare.txt")
_EXPECTED = (
    "the Tiny Shakespeare text file input.txt (plain UTF-8 text, 1,115,394 characters: karpathy/char-rnn "
    "data/tinyshakespeare/input.txt; also accepted as tinyshakespeare.txt or tiny-shakespeare.txt) "
    "in <root>/tinyshakespeare/ or <root>/"
)


def _find_text(name: str, root: str | Path | None) -> Path:
    base = data_root_for(name, root, _EXPECTED)
    folders = [base / "tinyshakespeare", base]
    for folder in folders:
        for file in _NAMES:
            if (folder / file).is_file():
                return folder / file
    raise missing_dataset(name, [str(f) for f in folders], _EXPECTED)


def _read_text(path: Path) -> str:
    """The file's text; an InputError naming the file when it is unreadable or not UTF-8 text."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read text file: {err}", source=path) from None
    try:
        text = raw.decode("utf-8-sig")  # a leading byte-order mark is not part of the text
    except UnicodeDecodeError as err:
        raise InputError(f"not UTF-8 text: {err}", source=path) from None
    if "\x00" in text:
        raise InputError("not a text file: it contains NUL characters", source=path)
    return text


def encode_characters(text: str) -> tuple[np.ndarray, str]:
    """(int64 id of every character, the vocabulary: the distinct characters sorted) in O(len(text))."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    counts = np.bincount(codes) if len(codes) else np.zeros(0, np.int64)
    present = np.flatnonzero(counts)
    table = np.zeros(len(counts), dtype=np.int64)
    table[present] = np.arange(len(present))
    return table[codes], "".join(map(chr, present.tolist()))


def _window_starts(n_chars: int, seq_len: int, stride: int) -> np.ndarray:
    """Start offsets of every full window of ``seq_len + 1`` characters, ``stride`` apart, from 0."""
    return np.arange(0, n_chars - seq_len, stride, dtype=np.int64)


def _windows(ids: np.ndarray, starts: np.ndarray, seq_len: int, option: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of the windows at ``starts``: x = window[:-1], y = window[1:]."""
    if len(starts) * seq_len > _MAX_ELEMENTS:
        raise InputError(
            f"{len(starts)} windows of {seq_len + 1} characters are too many to hold in memory; "
            f"raise stride or set {option}",
            source="tinyshakespeare",
            field="stride",
        )
    view = np.lib.stride_tricks.sliding_window_view(ids, seq_len + 1)  # no copy: windows at every offset
    x, y = view[starts, :-1], view[starts, 1:]  # copies of only the windows kept
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))


@register_dataset("tinyshakespeare", kind="text")
def load_tinyshakespeare(
    *,
    root: str | Path | None = None,
    seed: int = 0,
    seq_len: int = 64,
    stride: int | None = None,
    max_train: int | None = None,
    max_val: int | None = None,
) -> TextSplits:
    """Tiny Shakespeare as next-character windows: first 90 % of the characters train, last 10 % val.

    Args:
        root: folder holding ``tinyshakespeare/input.txt`` (or ``input.txt``); else ``$QNAS_DATA``.
        seed: orders the training windows (a seeded shuffle); nothing else is random.
        seq_len: characters per input window (2..4096); each window of ``seq_len + 1`` characters
            gives ``x = w[:-1]`` and ``y = w[1:]``.
        stride: characters between window starts; default ``seq_len`` (non-overlapping targets).
        max_train: keep the first ``max_train`` training windows of the seeded order (a prefix of
            the full load's order, so smaller loads are subsets of larger ones).
        max_val: keep the first ``max_val`` validation windows in text order (deterministic).

    The vocabulary is built from the whole text (as nanoGPT does). There is no third part of this
    text: the test split is every validation window (unaffected by ``max_val``), so test results are
    validation results on the full held-out 10 %.
    """
    name = "tinyshakespeare"
    seq_len = check_int(name, "seq_len", seq_len, 2, MAX_SEQ_LEN)
    stride = seq_len if stride is None else check_int(name, "stride", stride, 1)
    max_train = check_limit(name, "max_train", max_train)
    max_val = check_limit(name, "max_val", max_val)
    path = _find_text(name, root)
    text = _read_text(path)
    ids, vocab = encode_characters(text)
    n_train = int(TRAIN_FRACTION * len(ids))
    parts = {"train": ids[:n_train], "validation": ids[n_train:]}
    need = 2 * (seq_len + 1)
    short = {k: len(v) for k, v in parts.items() if len(v) < need}
    if short:
        which = ", ".join(f"the {k} part has {n}" for k, n in short.items())
        raise InputError(
            f"too short for seq_len={seq_len}: {len(ids)} characters, split 90/10 into train/validation; "
            f"{which} characters, need at least {need} (2 x (seq_len + 1)) in each; use a longer text or a "
            "smaller seq_len",
            source=path,
        )
    train_starts = _window_starts(len(parts["train"]), seq_len, stride)
    train_starts = train_starts[child_rngs(seed, 2)[1].permutation(len(train_starts))][:max_train]
    val_starts = _window_starts(len(parts["validation"]), seq_len, stride)
    train_x, train_y = _windows(parts["train"], train_starts, seq_len, "max_train")
    test_x, test_y = _windows(parts["validation"], val_starts, seq_len, "max_val")
    val_x, val_y = (test_x, test_y) if max_val is None or max_val >= len(val_starts) else (
        test_x[:max_val].clone(), test_y[:max_val].clone())
    description = (
        f"Tiny Shakespeare {path}: {len(ids):,} characters, {len(vocab)} distinct (vocabulary of the whole "
        f"text); first 90 % ({n_train:,} characters) train, last 10 % ({len(ids) - n_train:,}) validation; "
        f"windows of seq_len+1 = {seq_len + 1} characters every {stride} (x = window[:-1], y = window[1:]); "
        f"train/val/test {len(train_x)}/{len(val_x)}/{len(test_x)} windows (train in seeded order, seed {seed}; "
        "val in text order); no separate test text: test = every validation window"
    )
    return TextSplits(
        name=name,
        train_x=train_x,
        train_y=train_y,
        val_x=val_x,
        val_y=val_y,
        test_x=test_x,
        test_y=test_y,
        vocab_size=len(vocab),
        seq_len=seq_len,
        vocab=vocab,
        description=description,
    )
