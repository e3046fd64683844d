"""Tests of the character-level text dataset ``tinyshakespeare`` (supernets.data.text).

Most tests write a small synthetic ``input.txt`` under ``tmp_path``; one reads the real file from
``$QNAS_DATA`` and skips when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from search_spaces.errors import InputError
from supernets.data import TextSplits, dataset_kind, list_datasets, load_dataset
from supernets.data.text import load_tinyshakespeare

ALPHABET = "abcdefgh ijkl\nMNOP:;,.!?é"  # a non-ASCII character too: ids follow code-point order


def _text(n: int = 3000, seed: int = 0) -> str:
    """Random text whose last characters include one ('Z') that the training 90 % never holds."""
    rng = np.random.default_rng(seed)
    body = "".join(rng.choice(list(ALPHABET), size=n - 5))
    return body + "ZZ—Z\n"


def _write(root: Path, text: str | bytes, folder: str | None = "tinyshakespeare", name: str = "input.txt") -> Path:
    where = root / folder if folder else root
    where.mkdir(parents=True, exist_ok=True)
    path = where / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, str]:
    text = _text()
    _write(tmp_path, text)
    return tmp_path, text


def _decode(splits: TextSplits, ids: torch.Tensor) -> str:
    return "".join(splits.vocab[i] for i in ids.tolist())


# ------------------------------------------------------------------------------------- registry
def test_registered_as_text_kind(corpus):
    root, _ = corpus
    assert "tinyshakespeare" in list_datasets()
    assert dataset_kind("tinyshakespeare") == dataset_kind("TinyShakespeare") == "text"
    splits = load_dataset("tinyshakespeare", root=root, seq_len=8)
    assert isinstance(splits, TextSplits)
    assert splits.name == "tinyshakespeare"
    assert splits.num_classes == splits.vocab_size == len(splits.vocab)


def test_unknown_option_suggests_the_right_one(corpus):
    with pytest.raises(InputError, match="did you mean 'seq_len'") as info:
        load_dataset("tinyshakespeare", root=corpus[0], seqlen=8)
    assert info.value.field == "seqlen"


# ---------------------------------------------------------------------------- windows and vocab
def test_shapes_and_next_character_targets(corpus):
    root, text = corpus
    s = load_tinyshakespeare(root=root, seq_len=8)
    n_train = int(0.9 * len(text))
    assert s.seq_len == 8
    assert s.train_x.shape == s.train_y.shape == ((n_train - 9) // 8 + 1, 8)
    assert s.val_x.shape == s.test_x.shape == ((len(text) - n_train - 9) // 8 + 1, 8)
    for t in (s.train_x, s.train_y, s.val_x, s.val_y, s.test_x, s.test_y):
        assert t.dtype == torch.int64 and t.is_contiguous()
        assert int(t.min()) >= 0 and int(t.max()) < s.vocab_size
    for x, y in ((s.train_x, s.train_y), (s.val_x, s.val_y)):
        assert torch.equal(y[:, :-1], x[:, 1:])


def test_vocab_is_the_whole_texts_characters_sorted(corpus):
    root, text = corpus
    s = load_tinyshakespeare(root=root, seq_len=8)
    assert s.vocab == "".join(sorted(set(text)))
    assert "Z" in s.vocab and "Z" not in text[: int(0.9 * len(text))]  # val-only characters still get ids
    window = s.val_x[-1]
    assert s.decode(window) == _decode(s, window) and s.decode(window.tolist()) == s.decode(window)


def test_windows_are_the_text_split_90_10(corpus):
    root, text = corpus
    n_train = int(0.9 * len(text))
    train_text, val_text = text[:n_train], text[n_train:]
    s = load_tinyshakespeare(root=root, seq_len=8)
    for k in range(len(s.val_x)):  # val windows: the held-out 10 % in order, from its first character
        window = val_text[8 * k : 8 * k + 9]
        assert s.decode(s.val_x[k]) == window[:-1] and s.decode(s.val_y[k]) == window[1:]
    expected = {train_text[i : i + 9] for i in range(0, n_train - 8, 8)}
    got = {s.decode(x) + s.decode(y)[-1] for x, y in zip(s.train_x, s.train_y)}
    assert got == expected  # every training window, each from the training 90 % only
    assert torch.equal(s.test_x, s.val_x) and torch.equal(s.test_y, s.val_y)
    assert "test = every validation window" in s.description


def test_stride(corpus):
    root, text = corpus
    n_val = len(text) - int(0.9 * len(text))
    s = load_tinyshakespeare(root=root, seq_len=10, stride=3)
    assert len(s.val_x) == (n_val - 11) // 3 + 1
    assert torch.equal(s.val_x[1][:-3], s.val_x[0][3:])  # overlapping windows 3 characters apart
    wide = load_tinyshakespeare(root=root, seq_len=10, stride=25)
    assert len(wide.val_x) == (n_val - 11) // 25 + 1
    assert wide.decode(wide.val_x[1]) == text[int(0.9 * len(text)) + 25 :][:10]


# ------------------------------------------------------------------------------ limits and seeds
def test_max_train_is_a_seeded_prefix(corpus):
    root, _ = corpus
    full = load_tinyshakespeare(root=root, seq_len=8, seed=3)
    again = load_tinyshakespeare(root=root, seq_len=8, seed=3, max_train=20)
    assert len(again.train_x) == 20
    assert torch.equal(again.train_x, full.train_x[:20]) and torch.equal(again.train_y, full.train_y[:20])
    other = load_tinyshakespeare(root=root, seq_len=8, seed=4, max_train=20)
    assert not torch.equal(other.train_x, again.train_x)
    assert torch.equal(load_tinyshakespeare(root=root, seq_len=8, seed=3, max_train=20).train_x, again.train_x)
    assert torch.equal(other.val_x, again.val_x)  # the seed orders training windows only
    huge = load_tinyshakespeare(root=root, seq_len=8, seed=3, max_train=10**9)
    assert torch.equal(huge.train_x, full.train_x)


def test_max_val_keeps_the_first_windows_and_the_whole_test(corpus):
    root, _ = corpus
    full = load_tinyshakespeare(root=root, seq_len=8)
    s = load_tinyshakespeare(root=root, seq_len=8, max_val=5, seed=7)
    assert torch.equal(s.val_x, full.val_x[:5]) and torch.equal(s.val_y, full.val_y[:5])
    assert torch.equal(s.test_x, full.test_x)  # test is every validation window, whatever max_val


def test_to_moves_every_tensor_and_keeps_sharing(corpus):
    s = load_tinyshakespeare(root=corpus[0], seq_len=8)
    assert s.device == torch.device("cpu")
    moved = s.to("meta")
    assert isinstance(moved, TextSplits) and moved.device.type == "meta"
    assert all(getattr(moved, f).device.type == "meta" for f in ("train_y", "val_x", "val_y", "test_x", "test_y"))
    assert moved.val_x is moved.test_x and moved.vocab == s.vocab and moved.train_x.shape == s.train_x.shape


# ---------------------------------------------------------------------------------- bad options
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("seq_len", 1), ("seq_len", 4097), ("seq_len", "64"), ("seq_len", 8.0), ("seq_len", True),
        ("stride", 0), ("stride", -2), ("stride", 1.5),
        ("max_train", 0), ("max_train", -1), ("max_train", True),
        ("max_val", 0), ("max_val", "all"),
    ],
)  # fmt: skip
def test_bad_options_name_the_field(corpus, option, value):
    options = {"seq_len": 8, option: value}
    with pytest.raises(InputError) as info:
        load_dataset("tinyshakespeare", root=corpus[0], **options)
    assert info.value.field == option and option in str(info.value)


def test_bad_options_checked_before_the_file_is_looked_for(tmp_path):
    with pytest.raises(InputError) as info:
        load_tinyshakespeare(root=tmp_path, seq_len=0)
    assert info.value.field == "seq_len"


# ------------------------------------------------------------------------------------ the files
def test_missing_file_says_what_to_put_where(tmp_path):
    with pytest.raises(InputError) as info:
        load_tinyshakespeare(root=tmp_path)
    msg = str(info.value)
    assert msg.startswith("tinyshakespeare:")
    assert str(tmp_path / "tinyshakespeare") in msg and str(tmp_path) in msg
    assert "input.txt" in msg and "QNAS_DATA" in msg and "dataset.root" in msg


def test_no_data_folder(monkeypatch):
    monkeypatch.delenv("QNAS_DATA", raising=False)
    with pytest.raises(InputError, match="QNAS_DATA.*dataset.root") as info:
        load_tinyshakespeare()
    assert "input.txt" in str(info.value)


def test_found_through_qnas_data(corpus, monkeypatch):
    monkeypatch.setenv("QNAS_DATA", str(corpus[0]))
    assert load_dataset("tinyshakespeare", seq_len=8).vocab == "".join(sorted(set(corpus[1])))


@pytest.mark.parametrize(("folder", "name"), [(None, "input.txt"), (None, "tinyshakespeare.txt"),
                                              ("tinyshakespeare", "tiny-shakespeare.txt")])
def test_other_places_and_names(tmp_path, folder, name):
    text = _text(500)
    path = _write(tmp_path, text, folder, name)
    s = load_tinyshakespeare(root=tmp_path, seq_len=8)
    assert str(path) in s.description and s.vocab == "".join(sorted(set(text)))


def test_the_folder_wins_over_the_root(tmp_path):
    _write(tmp_path, "x" * 400, None)
    _write(tmp_path, _text(400))
    assert load_tinyshakespeare(root=tmp_path, seq_len=8).vocab_size > 1


@pytest.mark.parametrize("raw", [b"\xff\xfe\x00bad" * 200, "abc\x00def".encode() * 200])
def test_not_text_names_the_file(tmp_path, raw):
    path = _write(tmp_path, raw)
    with pytest.raises(InputError) as info:
        load_tinyshakespeare(root=tmp_path, seq_len=8)
    assert info.value.source == str(path) and "text" in info.value.detail


def test_too_short_for_seq_len_names_the_file(tmp_path):
    path = _write(tmp_path, _text(100))  # validation part: 10 characters
    assert len(load_tinyshakespeare(root=tmp_path, seq_len=4).val_x) == 2
    with pytest.raises(InputError) as info:
        load_tinyshakespeare(root=tmp_path, seq_len=8)
    msg = str(info.value)
    assert info.value.source == str(path) and "seq_len=8" in msg and "validation part has 10" in msg
    assert "train part" not in msg


def test_byte_order_mark_is_not_a_character(tmp_path):
    text = _text(500)
    _write(tmp_path, "\ufeff" + text)
    assert load_tinyshakespeare(root=tmp_path, seq_len=8).vocab == "".join(sorted(set(text)))


# ------------------------------------------------------------------------------------- real file
def test_real_tinyshakespeare():
    root = os.environ.get("QNAS_DATA")
    if not root or not (Path(root) / "tinyshakespeare" / "input.txt").is_file():
        pytest.skip("QNAS_DATA does not hold tinyshakespeare/input.txt")
    s = load_dataset("tinyshakespeare", root=root)
    assert s.vocab_size == 65 and s.vocab.startswith("\n !$&',-.3:;?AB") and s.vocab.endswith("xyz")
    n_train = int(0.9 * 1_115_394)
    assert s.train_x.shape == ((n_train - 65) // 64 + 1, 64)
    assert s.val_x.shape == ((1_115_394 - n_train - 65) // 64 + 1, 64)
    text = (Path(root) / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    assert s.decode(s.val_x[0]) == text[n_train : n_train + 64]
    assert s.decode(s.train_x[0]) in text[:n_train]
