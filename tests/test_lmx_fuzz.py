"""Property tests: the delinearizer never raises and always yields parseable XML or `unparseable`."""

import random
import xml.etree.ElementTree as ET

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acai_omr.lmx import LMX_TOKENS, LinearizeError, delinearize, find_piano_part, linearize_part, parse_score_string
from lmx_support import all_gold_sequences

JUNK = ["<bos>", "<eos>", "<pad>", "foo", "voice:13", "beats:17", "C10", "measure", "rest:measure", "backup", "forward"]
TOKEN = st.sampled_from(list(LMX_TOKENS) + JUNK)
GOLD = all_gold_sequences()
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(tokens, fractional: bool) -> None:
    result = delinearize(tokens, fractional_durations=fractional)
    assert not any("internal" in line for line in result.errors), result.errors[-1]
    if result.unparseable:
        assert result.part is None
        return
    text = result.to_musicxml()
    ET.fromstring(text.split("\n", 2)[2])  # after the declaration and DOCTYPE lines
    # whatever was rebuilt, reading it back either works or fails cleanly
    try:
        linearize_part(find_piano_part(parse_score_string(text)))
    except LinearizeError:
        pass


@FUZZ
@given(st.lists(TOKEN, max_size=80), st.booleans())
def test_random_token_strings(tokens, fractional):
    check(tokens, fractional)


@FUZZ
@given(st.lists(TOKEN, max_size=80), st.booleans())
def test_random_token_strings_after_measure(tokens, fractional):
    check(["measure"] + tokens, fractional)


@FUZZ
@given(st.integers(0, len(GOLD) - 1), st.lists(st.tuples(st.integers(0, 2), st.floats(0, 1), TOKEN),
                                               min_size=1, max_size=6), st.booleans())
def test_perturbed_real_sequences(index, edits, fractional):
    tokens = list(GOLD[index])
    for operation, where, token in edits:
        position = int(where * len(tokens))
        if operation == 0 and position < len(tokens):
            del tokens[position]
        elif operation == 1:
            tokens.insert(position, token)
        elif position < len(tokens):
            tokens[position] = token
    check(tokens, fractional)


def test_dropping_the_type_after_a_backup_is_not_a_crash():
    """The realistic reference crash of §3.5, on every backup of the real sequences."""
    rng = random.Random(0)
    for tokens in rng.sample(GOLD, min(12, len(GOLD))):  # the vendored fixtures alone when shared/ is absent
        for i, token in enumerate(tokens[:-1]):
            if token == "backup":
                check(tokens[:i + 1] + tokens[i + 2:], fractional=True)
