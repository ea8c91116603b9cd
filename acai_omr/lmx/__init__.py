"""LMX (Linearized MusicXML): the token vocabulary and the MusicXML <-> tokens codec.

See /work/shared/docs/lmx-tedn-spec.md §1-3 for the format.
"""

from .delinearize import DelinearizeResult, delinearize
from .linearize import LinearizeError, linearize_part, linearize_score
from .lmxfile import LmxFile, load_lmx_file, parse_lmx_text
from .musicxml import (
    MusicXMLError, find_piano_part, parse_score_string, part_to_score, read_score, score_to_string,
    split_part_into_systems,
)
from .vocab import BOS, EOS, LMX_TOKENS, PAD, VOCAB, Vocabulary, decode, encode

__all__ = [
    "BOS", "EOS", "LMX_TOKENS", "PAD", "VOCAB", "Vocabulary", "decode", "encode",
    "DelinearizeResult", "delinearize", "LinearizeError", "linearize_part", "linearize_score",
    "LmxFile", "load_lmx_file", "parse_lmx_text", "MusicXMLError", "find_piano_part", "parse_score_string",
    "part_to_score", "read_score", "score_to_string", "split_part_into_systems",
]
