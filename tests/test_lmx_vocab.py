"""The LMX vocabulary: 224 tokens in the spec's canonical order, and the model's ids."""

import pytest

from acai_omr.lmx import vocab
from acai_omr.lmx.vocab import BOS, EOS, LMX_TOKENS, PAD, VOCAB, Vocabulary

def test_224_distinct_tokens():
    assert len(LMX_TOKENS) == 224
    assert len(set(LMX_TOKENS)) == 224


def test_canonical_order_landmarks():
    assert LMX_TOKENS[0] == "measure"
    assert LMX_TOKENS[1] == "key:fifths:-7" and LMX_TOKENS[15] == "key:fifths:7"
    assert LMX_TOKENS[16:18] == ("time", "beats:1") and LMX_TOKENS[36] == "beat-type:16"
    assert LMX_TOKENS[37] == "clef:G1" and LMX_TOKENS[51] == "clef:F5"
    assert LMX_TOKENS[52:56] == ("print-object:no", "grace", "grace:slash", "chord")
    assert LMX_TOKENS[56] == "C0" and LMX_TOKENS[125] == "B9"
    assert LMX_TOKENS[126:129] == ("rest", "forward", "backup")
    assert LMX_TOKENS[129] == "voice:1" and LMX_TOKENS[140] == "voice:12"
    assert LMX_TOKENS[141] == "1024th" and LMX_TOKENS[154] == "maxima" and LMX_TOKENS[155] == "rest:measure"
    assert LMX_TOKENS[156] == "3in2" and LMX_TOKENS[184] == "9in2"
    assert LMX_TOKENS[-9:] == ("trill-mark",) + vocab.TREMOLO_TYPE_TOKENS + vocab.TREMOLO_MARKS_TOKENS


def test_pitches_ascend_and_types_double():
    pitches = vocab.PITCH_TOKENS
    assert pitches[:8] == ("C0", "D0", "E0", "F0", "G0", "A0", "B0", "C1")
    lengths = [vocab.TYPE_DURATION[t] for t in vocab.NOTE_TYPE_TOKENS]
    assert all(b == 2 * a for a, b in zip(lengths, lengths[1:]))
    assert vocab.TYPE_DURATION["quarter"] == 1 and vocab.TYPE_DURATION["1024th"] * 256 == 1


def test_parsing_classes_partition_the_vocabulary():
    classes = [vocab.ROOT_TOKENS, vocab.PREFIX_TOKENS, vocab.SUFFIX_TOKENS, {"measure"}]
    assert sum(len(c) for c in classes) == 224
    assert set().union(*classes) == set(LMX_TOKENS)
    assert "staff:1" in vocab.SUFFIX_TOKENS and "beats:3" in vocab.SUFFIX_TOKENS
    assert "time" in vocab.ROOT_TOKENS and "rest:measure" in vocab.ROOT_TOKENS
    assert "forward" in vocab.PREFIX_TOKENS and "voice:12" in vocab.PREFIX_TOKENS


def test_special_ids_come_first():
    assert len(VOCAB) == 227
    assert VOCAB.encode([PAD, BOS, EOS]) == [0, 1, 2]
    assert VOCAB.encode(["measure"]) == [3]
    assert VOCAB.encode(list(LMX_TOKENS)) == list(range(3, 227))


def test_encode_decode_round_trip_drops_specials():
    tokens = "measure key:fifths:0 C4 voice:1 quarter".split()
    ids = vocab.encode(tokens)
    assert vocab.decode([1] + ids + [2, 0, 0]) == tokens
    assert Vocabulary().encode(" ".join(tokens)) == ids


def test_encode_rejects_unknown_tokens_and_decode_bad_ids():
    with pytest.raises(ValueError, match="voice:13"):
        VOCAB.encode(["measure", "voice:13"])
    with pytest.raises(ValueError, match="outside"):
        VOCAB.decode([227])
