"""Grammar-constrained decoding: a small automaton over LMX token classes.

The automaton follows the canonical token order inside one item (spec §1.4)
and the parsing classes (§1.3): a sequence starts with ``measure``; note
prefixes come in order (print-object, grace, grace:slash, chord, pitch|rest,
voice) and must be closed by a note-type root; ``forward``/``backup`` take a
type root only; ``time`` must be followed by ``beats`` then ``beat-type``;
a clef may take one ``staff``; note suffixes come in canonical slot order
(repeatable: dot, beam, slur) and only after a note root, a note taking at
most ``MAX_BEAMS`` beam tokens; ``tremolo:TYPE`` must be followed by
``tremolo:MARKS``. Every accepted sequence therefore delinearizes without
dangling, unexpected or duplicated tokens.

Everything is precomputed into two tensors, so one decoding step costs one
gather: ``table[state, token]`` is the next state (-1 = forbidden) and
``steps_to_end[state]`` is the fewest tokens needed to reach ``<eos>``, which
lets the decoder close the last item before ``max_len`` instead of cutting it.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from acai_omr.lmx import vocab as V

# Note suffix slots in canonical order; a token may follow a suffix of a lower slot
# (or of the same slot when the slot is repeatable).
SUFFIX_SLOTS: list[tuple[tuple[str, ...], bool]] = [
    (V.TIME_MODIFICATION_TOKENS, False),
    ((V.DOT,), True),
    (V.ACCIDENTAL_TOKENS, False),
    (V.STEM_TOKENS, False),
    (V.STAFF_TOKENS, False),
    (V.BEAM_TOKENS, True),
    (("tied:stop",), False),
    (("tied:start",), False),
    (("tuplet:start",), False),
    (("tuplet:stop",), False),
    (V.SLUR_TOKENS, True),
    ((V.FERMATA,), False),
    ((V.ARPEGGIATE,), False),
    (("staccato",), False),
    (("accent",), False),
    (("strong-accent",), False),
    (("tenuto",), False),
    (V.TREMOLO_TYPE_TOKENS, False),
    (V.TREMOLO_MARKS_TOKENS, False),
    ((V.TRILL_MARK,), False),
]
TREMOLO_TYPE_SLOT = 17
TREMOLO_MARKS_SLOT = 18
BEAM_SLOT = 5
# A note has one beam token per beam level it takes part in: one for an eighth, two for a 16th, ...
# In the 1.74 million notes of the Lieder + piano-solo training mix none has more than five; a decoder
# that has lost its place can stack a dozen (the thirtieth session's weights, in a loop).
MAX_BEAMS = 6

# Prefix slots before the pitch/rest (in canonical order).
PREFIX_SLOTS = [(V.PRINT_OBJECT_NO,), (V.GRACE,), (V.GRACE_SLASH,), (V.CHORD,)]


class LMXGrammar:
    """Per-sequence automaton state as integers; see the module docstring."""

    def __init__(self) -> None:
        vocab = V.VOCAB
        self.vocab = vocab
        names: list[str] = []
        edges: dict[str, dict[str, str]] = {}

        def state(name: str) -> str:
            if name not in edges:
                names.append(name)
                edges[name] = {}
            return name

        def allow(src: str, tokens, dst: str) -> None:
            state(src)
            state(dst)
            for token in tokens:
                edges[src][token] = dst

        item_starts = {
            "key": V.KEY_TOKENS, "time": (V.TIME,), "clef": V.CLEF_TOKENS,
        }

        def allow_item_start(src: str, *, eos: bool = True) -> None:
            """From src a new item, a new measure or (if eos) the end may follow."""
            allow(src, (V.MEASURE,), "measure")
            if eos:
                allow(src, (V.EOS,), "done")
            allow(src, item_starts["key"], "attr_end")
            allow(src, item_starts["time"], "time")
            allow(src, item_starts["clef"], "clef")
            for slot, tokens in enumerate(PREFIX_SLOTS):
                if slot != 2:  # grace:slash only right after grace
                    allow(src, tokens, f"prefix{slot}")
            allow(src, V.PITCH_TOKENS, "pitch")
            allow(src, (V.REST,), "rest")
            allow(src, (V.FORWARD, V.BACKUP), "forward_backup")

        allow("start", (V.MEASURE,), "measure")
        allow_item_start("measure", eos=False)  # no trailing empty measure
        allow_item_start("attr_end")
        allow("time", V.BEATS_TOKENS, "time_beats")
        allow("time_beats", V.BEAT_TYPE_TOKENS, "attr_end")
        allow_item_start("clef")
        allow("clef", V.STAFF_TOKENS, "attr_end")
        # note prefixes
        for slot in range(len(PREFIX_SLOTS)):
            src = f"prefix{slot}"
            for later in range(slot + 1, len(PREFIX_SLOTS)):
                if later == 2 and slot != 1:
                    continue
                allow(src, PREFIX_SLOTS[later], f"prefix{later}")
            allow(src, V.PITCH_TOKENS, "pitch")
            allow(src, (V.REST,), "rest")
        for kind in ("pitch", "rest"):
            roots = V.NOTE_TYPE_TOKENS + ((V.REST_MEASURE,) if kind == "rest" else ())
            allow(kind, V.VOICE_TOKENS, f"{kind}_voice")
            allow(kind, roots, "suffix-1")
            allow(f"{kind}_voice", roots, "suffix-1")
        allow("forward_backup", V.NOTE_TYPE_TOKENS, "attr_end")
        # note suffixes: state "suffix{k}" = the last suffix filled slot k (-1: just the root);
        # "suffix{BEAM_SLOT}x{n}": n beam tokens so far (one: plain "suffix{BEAM_SLOT}")
        def beam_state(count: int) -> str:
            return f"suffix{BEAM_SLOT}" if count == 1 else f"suffix{BEAM_SLOT}x{count}"

        for current, beams in [(c, 1 if c == BEAM_SLOT else 0) for c in range(-1, len(SUFFIX_SLOTS))] + \
                [(BEAM_SLOT, n) for n in range(2, MAX_BEAMS + 1)]:
            src = beam_state(beams) if current == BEAM_SLOT else f"suffix{current}"
            if current == TREMOLO_TYPE_SLOT:
                allow(src, SUFFIX_SLOTS[TREMOLO_MARKS_SLOT][0], f"suffix{TREMOLO_MARKS_SLOT}")
                continue
            allow_item_start(src)
            for slot, (tokens, repeatable) in enumerate(SUFFIX_SLOTS):
                if slot == TREMOLO_MARKS_SLOT:
                    continue  # only right after a tremolo type
                if slot == BEAM_SLOT and slot >= current:
                    if beams < MAX_BEAMS:
                        allow(src, tokens, beam_state(beams + 1))
                elif slot > current or (slot == current and repeatable):
                    allow(src, tokens, f"suffix{slot}")
        allow("done", (V.PAD,), "done")

        self.state_names = names
        index = {name: i for i, name in enumerate(names)}
        table = torch.full((len(names), len(vocab)), -1, dtype=torch.long)
        for name, out in edges.items():
            for token, dst in out.items():
                table[index[name], vocab.token_to_id[token]] = index[dst]
        self.table = table
        self.start_state = index["start"]
        self.done_state = index["done"]
        self.steps_to_end = self._steps_to_end(edges, index)
        self._device_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @staticmethod
    def _steps_to_end(edges: dict[str, dict[str, str]], index: dict[str, int]) -> torch.Tensor:
        """Fewest tokens from each state to <eos> inclusive (0 for done), by backward BFS."""
        big = 10**6
        dist = {name: big for name in edges}
        dist["done"] = 0
        changed = True
        while changed:
            changed = False
            for name, out in edges.items():
                for token, dst in out.items():
                    if token != V.PAD and dist[dst] + 1 < dist[name]:
                        dist[name] = dist[dst] + 1
                        changed = True
        result = torch.zeros(len(index), dtype=torch.long)
        for name, d in dist.items():
            result[index[name]] = d
        return result

    def _tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._device_cache:
            self._device_cache[device] = (self.table.to(device), self.steps_to_end.to(device))
        return self._device_cache[device]

    def initial(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.full((batch,), self.start_state, dtype=torch.long, device=device)

    def allowed(self, states: torch.Tensor, remaining: int | torch.Tensor | None = None) -> torch.Tensor:
        """[B] states -> [B, V] bool of permitted next tokens.

        With ``remaining`` (tokens left including this one; one number, or one per row) only tokens
        from which <eos> can still be reached in time are permitted.
        """
        table, steps = self._tensors(states.device)
        nxt = table[states]
        ok = nxt >= 0
        if remaining is not None:
            if torch.is_tensor(remaining):
                remaining = remaining[:, None]
            ok &= steps[nxt.clamp(min=0)] <= remaining - 1
        return ok

    def shortest_ending(self, states: torch.Tensor) -> torch.Tensor:
        """[B] states -> [B] fewest tokens (<eos> included) that complete each sequence."""
        return self._tensors(states.device)[1][states]

    def advance(self, states: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Next states after emitting tokens [B]; a forbidden token raises ValueError."""
        table, _ = self._tensors(states.device)
        nxt = table[states, tokens]
        if bool((nxt < 0).any()):
            bad = int((nxt < 0).nonzero()[0, 0])
            raise ValueError(f"token {self.vocab.tokens[int(tokens[bad])]!r} is not allowed in state "
                             f"{self.state_names[int(states[bad])]!r}")
        return nxt

    def accepts(self, tokens: list[str]) -> tuple[bool, str]:
        """Whether a complete LMX sequence (without <eos>) is accepted, and if not, why."""
        state = self.start_state
        for position, token in enumerate(list(tokens) + [V.EOS]):
            token_id = self.vocab.token_to_id.get(token)
            nxt = -1 if token_id is None else int(self.table[state, token_id])
            if nxt < 0:
                return False, f"token {token!r} at position {position} not allowed after state " \
                              f"{self.state_names[state]!r}"
            state = nxt
        return True, ""


@lru_cache(maxsize=1)
def lmx_grammar() -> LMXGrammar:
    """The shared automaton (built once, ~0.1 s)."""
    return LMXGrammar()
