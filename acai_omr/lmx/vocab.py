"""The LMX token vocabulary (spec §1.1-1.3) and the model's integer ids.

The 224 LMX tokens are listed in the canonical order of the reference
``ALL_TOKENS``. Ids put three specials first (pad=0, bos=1, eos=2), so an LMX
token's id is its canonical index + 3. The token classes (roots, prefixes,
suffixes and their finer groups) are exported for the delinearizer and for a
grammar-constrained decoder.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Iterable, Sequence

PAD = "<pad>"
BOS = "<bos>"
EOS = "<eos>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS)

MEASURE = "measure"

KEY_TOKENS = tuple(f"key:fifths:{n}" for n in range(-7, 8))
TIME = "time"
BEATS_TOKENS = tuple(f"beats:{n}" for n in range(1, 17))
BEAT_TYPE_TOKENS = tuple(f"beat-type:{n}" for n in (2, 4, 8, 16))
TIME_TOKENS = (TIME,) + BEATS_TOKENS + BEAT_TYPE_TOKENS
CLEF_TOKENS = tuple(f"clef:{sign}{line}" for sign in "GCF" for line in range(1, 6))

PRINT_OBJECT_NO = "print-object:no"
GRACE = "grace"
GRACE_SLASH = "grace:slash"
CHORD = "chord"
PITCH_STEPS = "CDEFGAB"
PITCH_TOKENS = tuple(f"{step}{octave}" for octave in range(10) for step in PITCH_STEPS)
REST = "rest"
FORWARD = "forward"
BACKUP = "backup"
VOICE_TOKENS = tuple(f"voice:{n}" for n in range(1, 13))
NOTE_PREFIX_TOKENS = (
    (PRINT_OBJECT_NO, GRACE, GRACE_SLASH, CHORD) + PITCH_TOKENS + (REST, FORWARD, BACKUP) + VOICE_TOKENS
)

# Note types from shortest to longest; each lasts twice the one before (quarter = 1).
NOTE_TYPE_TOKENS = (
    "1024th", "512th", "256th", "128th", "64th", "32nd", "16th",
    "eighth", "quarter", "half", "whole", "breve", "long", "maxima",
)
TYPE_DURATION: dict[str, Fraction] = {
    name: Fraction(2) ** (index - NOTE_TYPE_TOKENS.index("quarter")) for index, name in enumerate(NOTE_TYPE_TOKENS)
}
REST_MEASURE = "rest:measure"
NOTE_ROOT_TOKENS = NOTE_TYPE_TOKENS + (REST_MEASURE,)

TIME_MODIFICATION_TOKENS = (
    "3in2", "6in4", "2in1", "2in3", "5in4", "7in8", "7in6", "9in8", "4in3", "7in4", "4in6", "13in8",
    "22in16", "10in4", "12in8", "9in4", "10in8", "18in4", "16in8", "15in8", "5in3", "11in8", "11in12",
    "5in2", "8in2", "4in2", "7in1", "35in16", "9in2",
)
DOT = "dot"
ACCIDENTAL_TOKENS = ("sharp", "flat", "natural", "double-sharp", "flat-flat", "natural-sharp", "natural-flat")
STEM_TOKENS = ("stem:up", "stem:down", "stem:none")
STAFF_TOKENS = ("staff:1", "staff:2", "staff:3")
BEAM_TOKENS = ("beam:begin", "beam:end", "beam:forward-hook", "beam:backward-hook")
TIED_TOKENS = ("tied:start", "tied:stop")
TUPLET_TOKENS = ("tuplet:start", "tuplet:stop")
SLUR_TOKENS = ("slur:start", "slur:stop")
FERMATA = "fermata"
ARPEGGIATE = "arpeggiate"
ARTICULATION_TOKENS = ("staccato", "accent", "strong-accent", "tenuto")
TRILL_MARK = "trill-mark"
TREMOLO_TYPE_TOKENS = ("tremolo:single", "tremolo:start", "tremolo:stop", "tremolo:unmeasured")
TREMOLO_MARKS_TOKENS = ("tremolo:1", "tremolo:2", "tremolo:3", "tremolo:4")
NOTE_SUFFIX_TOKENS = (
    TIME_MODIFICATION_TOKENS + (DOT,) + ACCIDENTAL_TOKENS + STEM_TOKENS + STAFF_TOKENS + BEAM_TOKENS
    + TIED_TOKENS + TUPLET_TOKENS + SLUR_TOKENS + (FERMATA, ARPEGGIATE) + ARTICULATION_TOKENS + (TRILL_MARK,)
    + TREMOLO_TYPE_TOKENS + TREMOLO_MARKS_TOKENS
)

LMX_TOKENS: tuple[str, ...] = (
    (MEASURE,) + KEY_TOKENS + TIME_TOKENS + CLEF_TOKENS + NOTE_PREFIX_TOKENS + NOTE_ROOT_TOKENS + NOTE_SUFFIX_TOKENS
)
LMX_TOKEN_SET = frozenset(LMX_TOKENS)

# Parsing classes (spec §1.3): a root starts an item, prefixes attach to the next
# root, suffixes to the previous one; `measure` only splits measures.
ROOT_TOKENS = frozenset(NOTE_ROOT_TOKENS + (TIME,) + KEY_TOKENS + CLEF_TOKENS)
PREFIX_TOKENS = frozenset(NOTE_PREFIX_TOKENS)
SUFFIX_TOKENS = frozenset(NOTE_SUFFIX_TOKENS + BEATS_TOKENS + BEAT_TYPE_TOKENS)
ATTRIBUTE_ROOT_TOKENS = frozenset((TIME,) + KEY_TOKENS + CLEF_TOKENS)


def _group(name: str, tokens: Iterable[str]) -> dict[str, str]:
    return {token: name for token in tokens}


# Token -> the "slot" it fills inside an item. Tokens sharing a slot are
# alternatives: a singleton slot may hold one of them (see MULTI_VALUED_GROUPS).
TOKEN_GROUP: dict[str, str] = {
    PRINT_OBJECT_NO: "print-object", GRACE: "grace", GRACE_SLASH: "grace-slash", CHORD: "chord",
    **_group("pitch", PITCH_TOKENS), REST: "rest", FORWARD: "forward", BACKUP: "backup",
    **_group("voice", VOICE_TOKENS),
    **_group("time-modification", TIME_MODIFICATION_TOKENS), DOT: "dot",
    **_group("accidental", ACCIDENTAL_TOKENS), **_group("stem", STEM_TOKENS), **_group("staff", STAFF_TOKENS),
    **_group("beam", BEAM_TOKENS),
    "tied:start": "tied:start", "tied:stop": "tied:stop",
    "tuplet:start": "tuplet:start", "tuplet:stop": "tuplet:stop",
    **_group("slur", SLUR_TOKENS), FERMATA: "fermata", ARPEGGIATE: "arpeggiate",
    **{token: token for token in ARTICULATION_TOKENS}, TRILL_MARK: "trill-mark",
    **_group("tremolo-type", TREMOLO_TYPE_TOKENS), **_group("tremolo-marks", TREMOLO_MARKS_TOKENS),
    **_group("beats", BEATS_TOKENS), **_group("beat-type", BEAT_TYPE_TOKENS),
}
MULTI_VALUED_GROUPS = frozenset({"dot", "beam", "slur"})

NOTE_PREFIX_GROUPS = frozenset(TOKEN_GROUP[t] for t in NOTE_PREFIX_TOKENS)
NOTE_SUFFIX_GROUPS = frozenset(TOKEN_GROUP[t] for t in NOTE_SUFFIX_TOKENS)
# What each kind of root accepts (anything else is an "unexpected" token).
ACCEPTED_GROUPS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "note": (NOTE_PREFIX_GROUPS, NOTE_SUFFIX_GROUPS),
    "forward/backup": (frozenset({"forward", "backup"}), frozenset({"time-modification"})),
    "time": (frozenset(), frozenset({"beats", "beat-type"})),
    "key": (frozenset(), frozenset()),
    "clef": (frozenset(), frozenset({"staff"})),
}


def root_kind(token: str) -> str:
    """The kind of a root token: "note", "time", "key" or "clef"."""
    if token in KEY_TOKENS_SET:
        return "key"
    if token in CLEF_TOKENS_SET:
        return "clef"
    if token == TIME:
        return "time"
    return "note"


KEY_TOKENS_SET = frozenset(KEY_TOKENS)
CLEF_TOKENS_SET = frozenset(CLEF_TOKENS)


class Vocabulary:
    """Token <-> id mapping: pad=0, bos=1, eos=2, then the 224 LMX tokens."""

    def __init__(self) -> None:
        self.tokens: tuple[str, ...] = SPECIAL_TOKENS + LMX_TOKENS
        self.token_to_id: dict[str, int] = {token: i for i, token in enumerate(self.tokens)}
        self.pad_id = self.token_to_id[PAD]
        self.bos_id = self.token_to_id[BOS]
        self.eos_id = self.token_to_id[EOS]
        self.special_ids = frozenset((self.pad_id, self.bos_id, self.eos_id))

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self.token_to_id

    def encode(self, tokens: Sequence[str] | str) -> list[int]:
        """Ids of the tokens (a string is split on whitespace); unknown tokens raise ValueError."""
        if isinstance(tokens, str):
            tokens = tokens.split()
        ids = []
        for position, token in enumerate(tokens):
            token_id = self.token_to_id.get(token)
            if token_id is None:
                raise ValueError(f"token {token!r} at position {position} is not in the LMX vocabulary")
            ids.append(token_id)
        return ids

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of the ids, with pad/bos/eos dropped; an id out of range raises ValueError."""
        tokens = []
        for token_id in ids:
            token_id = int(token_id)
            if token_id in self.special_ids:
                continue
            if not 0 <= token_id < len(self.tokens):
                raise ValueError(f"id {token_id} is outside the vocabulary (size {len(self.tokens)})")
            tokens.append(self.tokens[token_id])
        return tokens


VOCAB = Vocabulary()


def encode(tokens: Sequence[str] | str) -> list[int]:
    return VOCAB.encode(tokens)


def decode(ids: Iterable[int]) -> list[str]:
    return VOCAB.decode(ids)
