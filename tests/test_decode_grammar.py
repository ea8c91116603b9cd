"""The LMX grammar automaton accepts every gold sequence and rejects malformed ones."""

import pytest
import torch

from acai_omr.inference.grammar import lmx_grammar
from acai_omr.lmx.lmxfile import load_lmx_file
from acai_omr.lmx.vocab import VOCAB
from acai_omr.paths import REPO_ROOT, shared_dir

LIEDER = shared_dir() / "conformance" / "lieder-dev"
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "olimpic-lmx"


@pytest.mark.skipif(not LIEDER.is_dir(), reason="shared lieder-dev conformance set not present")
def test_accepts_all_gold_lieder_systems():
    grammar = lmx_grammar()
    files = sorted(LIEDER.glob("*.lmx"))
    assert len(files) > 100
    for path in files:
        ok, why = grammar.accepts(path.read_text().split())
        assert ok, f"{path.name}: {why}"


def test_accepts_fixture_systems():
    grammar = lmx_grammar()
    paths = sorted(FIXTURES.glob("*.lmx"))
    assert paths
    for path in paths:
        for system in load_lmx_file(path).systems:
            tokens = system if isinstance(system, list) else str(system).split()
            ok, why = grammar.accepts(tokens)
            assert ok, f"{path.name}: {why}"


@pytest.mark.parametrize("text, bad_token", [
    ("C4 quarter", "C4"),  # must start with measure
    ("measure quarter", None),  # a note root needs a pitch or rest prefix
    ("measure beats:4 beat-type:4", "beats:4"),  # beats only after time
    ("measure time beat-type:4", "beat-type:4"),
    ("measure time beats:3", "<eos>"),  # time needs its beat-type
    ("measure staff:1 C4 quarter", "staff:1"),  # dangling suffix
    ("measure C4 quarter dot sharp sharp", "sharp"),  # duplicated singleton suffix
    ("measure C4 quarter C4", "<eos>"),  # dangling prefix at the end
    ("measure key:fifths:0 dot", "dot"),  # a key takes no suffix
    ("measure forward voice:1 quarter", "voice:1"),  # forward takes only a type
    ("measure C4 quarter tremolo:single", "<eos>"),  # tremolo type needs its marks
    ("measure", "<eos>"),  # no empty trailing measure
    ("measure C4 16th " + "beam:begin " * 7, "beam:begin"),  # a stack of beams no note has
])
def test_rejects_malformed(text, bad_token):
    ok, why = lmx_grammar().accepts(text.split())
    assert not ok
    if bad_token:
        assert repr(bad_token) in why


def test_allowed_mask_and_advance_agree():
    grammar = lmx_grammar()
    states = grammar.initial(2)
    allowed = grammar.allowed(states)
    assert allowed.sum(1).tolist() == [1, 1] and allowed[0, VOCAB.token_to_id["measure"]]
    states = grammar.advance(states, torch.tensor([VOCAB.token_to_id["measure"]] * 2))
    with pytest.raises(ValueError, match="not allowed"):
        grammar.advance(states, torch.tensor([VOCAB.token_to_id["quarter"], VOCAB.token_to_id["C4"]]))


def test_remaining_budget_forces_an_ending():
    """With two tokens left after `measure C4`, only roots that let <eos> follow are allowed."""
    grammar = lmx_grammar()
    states = grammar.initial(1)
    for token in ("measure", "C4"):
        states = grammar.advance(states, torch.tensor([VOCAB.token_to_id[token]]))
    allowed = grammar.allowed(states, remaining=2)[0]
    names = {VOCAB.tokens[i] for i in allowed.nonzero().flatten().tolist()}
    assert names == {"quarter", "half", "whole", "eighth", "16th", "32nd", "64th", "128th", "256th", "512th",
                     "1024th", "breve", "long", "maxima"}
    assert not grammar.allowed(states, remaining=1)[0].any()  # cannot finish in one token


def test_a_note_takes_up_to_six_beams_and_then_its_later_suffixes():
    grammar = lmx_grammar()
    note = "measure C4 voice:1 1024th staff:1".split()
    ok, why = grammar.accepts(note + ["beam:begin"] * 3 + ["beam:forward-hook"] * 3 + ["tuplet:start", "slur:start"])
    assert ok, why
    ok, why = grammar.accepts(note + ["beam:begin"] * 2 + "D4 16th beam:end beam:end".split())
    assert ok, why  # the count starts again on the next note
