"""Decoding LMX token ids from system images: greedy, beam search and sampling.

All three encode the images once, build a ``DecoderCache`` (cross-attention
keys/values computed once per image, self-attention keys/values appended per
step) and feed one token per step. They run batched over images (and over
beams / samples), stop at ``<eos>`` or after ``max_len`` generated tokens, never
emit ``<pad>``/``<bos>``, and optionally follow the LMX grammar
(``constrained=True``, see acai_omr.inference.grammar). The model is put in
eval mode while decoding and restored afterwards.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from acai_omr.inference.grammar import lmx_grammar
from acai_omr.lmx.clock import LONGEST_MEASURE_QUARTERS, MeasureClock
from acai_omr.lmx.reading_order import NOTE_LABELS, REST
from acai_omr.lmx.vocab import VOCAB
from acai_omr.model.model import KEY_IDS, MEASURE_ID, OMRModel, header_token_ids

PAD_ID, BOS_ID, EOS_ID = VOCAB.pad_id, VOCAB.bos_id, VOCAB.eos_id


def _pitch_mask() -> torch.Tensor:
    mask = torch.zeros(len(VOCAB.tokens), dtype=torch.bool)
    mask[[VOCAB.token_to_id[label] for label in NOTE_LABELS if label != REST]] = True
    return mask


PITCH_MASK = _pitch_mask()  # the 70 pitch tokens C0..B9 that open a note


@dataclass
class DecodeResult:
    """One decoded system."""

    token_ids: list[int]  # generated LMX ids, without <bos>/<eos>
    logprob: float  # sum of the log-probabilities of the generated tokens (<eos> included)
    confidence: float  # mean per-token probability (<eos> included), 0..1
    finished: bool  # True if <eos> was produced; False if cut at max_len
    token_logprobs: list[float] = field(default_factory=list)  # log-prob of each generated token (no <eos>)
    runaway: bool = False  # a measure overran every real measure's bounds and the piece was closed early

    @property
    def tokens(self) -> list[str]:
        return VOCAB.decode(self.token_ids)


@dataclass
class SampleResult:
    """``n_samples`` sequences per image, rows image-major (image i owns rows i*n .. i*n+n-1)."""

    token_ids: torch.Tensor  # [B*n, L] generated ids, <eos> included, <pad> after it
    logprobs: torch.Tensor  # [B*n, L] log-prob of each token under the distribution sampled from; 0 on padding
    lengths: torch.Tensor  # [B*n] generated tokens per row, <eos> included
    finished: torch.Tensor  # [B*n] bool, produced <eos>
    image_index: torch.Tensor  # [B*n] which input image each row belongs to

    def sequence(self, row: int) -> list[int]:
        """LMX ids of one row, without <eos>."""
        ids = self.token_ids[row, : int(self.lengths[row])].tolist()
        return ids[:-1] if ids and ids[-1] == EOS_ID else ids


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def resolve_max_len(model: OMRModel, max_len: int | None) -> int:
    """Generated tokens allowed: <bos> takes one of the model's max_tokens positions."""
    limit = model.cfg.max_tokens - 1
    if max_len is None:
        return limit
    if not 1 <= max_len <= limit:
        raise ValueError(f"max_len must be in 1..{limit}, got {max_len}")
    return max_len


def mask_logits(logits: torch.Tensor, finished: torch.Tensor, states, grammar, remaining: int) -> torch.Tensor:
    """Forbid <pad>/<bos> (and grammar-forbidden tokens); a finished row may only continue with <pad>."""
    logits[:, PAD_ID] = float("-inf")
    logits[:, BOS_ID] = float("-inf")
    if grammar is not None:
        logits = logits.masked_fill(~grammar.allowed(states, remaining), float("-inf"))
    logits[finished] = float("-inf")
    logits[finished, PAD_ID] = 0.0
    return logits


def next_token_logprobs(model: OMRModel, cache, last_tokens, finished, states, grammar, remaining: int):
    """Log-probs [R, V] of the next token of each row, masked as in mask_logits."""
    logits = model.decoder(last_tokens[:, None], None, None, cache=cache)[:, -1].float()
    return F.log_softmax(mask_logits(logits, finished, states, grammar, remaining), dim=-1)


def grammar_for(constrained: bool):
    if not constrained:
        return None

    return lmx_grammar()


def _start(model: OMRModel, images, widths, max_len, rows_per_image: int, read_header: bool = False):
    """Encode once, build a cache with rows_per_image rows per image; with `read_header` also the header
    head's answers (`HeaderReader`), else None."""
    memory, valid = model.encode(images, widths)
    cache = model.decoder.new_cache(memory, valid, max_len)
    if rows_per_image > 1:
        cache.reorder(torch.arange(images.shape[0], device=images.device).repeat_interleave(rows_per_image))
    header = None
    if read_header and model.header is not None:
        key_logits, time_logits = model.header(memory, valid)
        header = HeaderReader(key_logits.argmax(-1).tolist(), time_logits.argmax(-1).tolist())
    return cache, header


class HeaderReader:
    """Writes the header head's key and time signature where the decoder opens a system with its own guess.

    When a row's decoder picks a key token in its first measure, the head's key replaces it and, if
    the head reads a time signature there, `time beats:N beat-type:M` follows (the decoder alone
    never wrote one). Later key tokens (key changes) are the decoder's, and so is every other token.
    A replacement the grammar forbids is skipped.
    """

    def __init__(self, keys: list[int], times: list[int]):
        self.answers = list(zip(keys, times))
        self.pending: list[list[int]] = [[] for _ in keys]
        self.done = [False] * len(keys)
        self.measures = [0] * len(keys)

    def apply(self, token: torch.Tensor, token_logp: torch.Tensor, logp: torch.Tensor, finished: torch.Tensor):
        chosen = token.tolist()
        for row, (picked, over) in enumerate(zip(chosen, finished.tolist())):
            if over:
                continue
            wanted = None
            if self.pending[row]:
                wanted = self.pending[row].pop(0)
            elif picked in KEY_IDS and not self.done[row] and self.measures[row] <= 1:
                self.done[row] = True
                wanted, self.pending[row] = header_token_ids(*self.answers[row])
            if wanted is not None and torch.isfinite(logp[row, wanted]):
                token[row], token_logp[row] = wanted, logp[row, wanted]
            elif wanted is not None:
                self.pending[row] = []  # the grammar forbids it here: leave the rest to the decoder
            if int(token[row]) == MEASURE_ID:
                self.measures[row] += 1
        return token, token_logp


PROGRESS_EVERY = 16  # decoding steps between `on_step` reports


@dataclass(frozen=True)
class RunawayLimits:
    """A bound no real measure reaches; a piece whose measure passes it is looping, not reading.

    A decoder that has lost its place sometimes writes the same notes over and over until the token
    cap (the twelfth session's weights: 2 of 198 lieder-dev systems, each then scoring over 200%
    TEDn). No voice may pass `LONGEST_MEASURE_QUARTERS` (acai_omr.lmx.clock, with the figure behind
    it). Not bounded: a loop that does not move time forward (chords, backups); the token cap ends it.

    A loop in a later voice is held tighter: once the measure's first voice has ended (its first
    `backup`, at F quarters), no voice may pass 2F + 2. The voices of a real measure fill the same
    length; in the 100,400 measures of the Lieder + piano-solo training mix whose first voice ends
    past 0, 31 pass 2F + 2, and 22 of those are unmeasured passages (cadenzas, unbarred music) that
    pass 16 anyway. The thirtieth session's weights looped in a 6/8 measure's left hand up to the
    768-token cap without passing 16 quarters (lieder-dev, degraded); this bound trips there at 8.
    """

    quarters: float = LONGEST_MEASURE_QUARTERS  # furthest any voice may get into one measure
    voice_factor: float = 2.0  # ... and, after the first voice ended at F quarters, no further than
    voice_margin: float = 2.0  # voice_factor * F + voice_margin

    def bound(self, first_voice) -> float:
        """The furthest a measure may go, given where its first voice ended (None or 0: unknown)."""
        if not first_voice:
            return self.quarters
        return min(self.quarters, self.voice_factor * float(first_voice) + self.voice_margin)


class RunawayGuard:
    """Follows each row's measure (`MeasureClock`) and names the rows that overran `RunawayLimits`."""

    def __init__(self, rows: int, limits: RunawayLimits):
        self.limits = limits
        self.clocks = [MeasureClock() for _ in range(rows)]
        self.tripped = [False] * rows

    def update(self, tokens: list[int], finished: list[bool]) -> list[int]:
        """Feed one step's tokens; returns the rows that overran just now."""
        newly = []
        for row, (token, over) in enumerate(zip(tokens, finished)):
            if over or self.tripped[row]:
                continue
            clock = self.clocks[row]
            clock.feed(VOCAB.tokens[token])
            if clock.peak > self.limits.bound(clock.first_voice):
                self.tripped[row] = True
                newly.append(row)
        return newly


def decode_steps(rows: int, device, max_len: int, grammar, pick, on_step=None,
                 runaway: RunawayLimits | None = None):
    """The step loop greedy decoding and sampling share: ``pick(last, finished, states, remaining)``
    chooses each row's next token and its log-probability; finished rows get <pad> (log-prob 0).
    ``remaining`` (tokens each row may still write, <eos> included: an int, or a [rows] tensor once a
    row has been cut short) lets the grammar close the last item in time.
    ``on_step(tokens per row)`` hears every PROGRESS_EVERY steps how many tokens each row has written.
    With ``runaway`` limits, a row whose measure overruns them is closed as soon as the grammar
    allows (at once without a grammar); the fourth value returned flags those rows."""
    last = torch.full((rows,), BOS_ID, dtype=torch.long, device=device)
    states = grammar.initial(rows, device) if grammar else None
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    written = torch.zeros(rows, dtype=torch.long, device=device)  # real tokens per row, for on_step
    guard = RunawayGuard(rows, runaway) if runaway is not None else None
    deadline = None  # [rows] step by which each row must have written <eos>, once one is cut short
    steps_ids, steps_logp = [], []
    for step in range(max_len):
        remaining = max_len - step if deadline is None else (deadline - step).clamp(min=1, max=max_len - step)
        token, token_logp = pick(last, finished, states, remaining)
        if deadline is not None and grammar is None:  # nothing to close: a cut row ends here
            due = deadline <= step + 1
            token = torch.where(due, EOS_ID, token)
            token_logp = torch.where(due, 0.0, token_logp)
        token = torch.where(finished, PAD_ID, token)
        steps_ids.append(token)
        steps_logp.append(torch.where(finished, 0.0, token_logp))
        finished = finished | (token == EOS_ID)
        if grammar is not None:
            states = grammar.advance(states, token)
        if bool(finished.all()):
            break
        written += token > EOS_ID
        if on_step is not None and (step + 1) % PROGRESS_EVERY == 0:
            on_step(written.tolist())
        last = token
        if guard is not None:
            cut = guard.update(token.tolist(), finished.tolist())
            if cut:
                if deadline is None:
                    deadline = torch.full((rows,), max_len, dtype=torch.long, device=device)
                rows_cut = torch.tensor(cut, dtype=torch.long, device=device)
                # the fewest tokens that close the open item and write <eos> (one, <eos>, without a grammar)
                needed = grammar.shortest_ending(states[rows_cut]) if grammar is not None else 1
                deadline[rows_cut] = step + 1 + needed
    tripped = torch.tensor(guard.tripped if guard is not None else [False] * rows, dtype=torch.bool)
    return torch.stack(steps_ids, 1), torch.stack(steps_logp, 1), finished, tripped


def pitch_grouped_argmax(logp: torch.Tensor, pitch_mask: torch.Tensor = PITCH_MASK) -> tuple[torch.Tensor, torch.Tensor]:
    """(token [R], its log-prob [R]) from log-probs [R, V]: the likeliest pitch when all pitches together
    are likelier than the likeliest other token, else that other token.

    A note opens with one of 70 pitch tokens, a rest with the single token `rest`: a model unsure of
    the pitch spreads the note's probability over several pitches while the rest keeps its share
    whole, so a plain argmax writes a rest for a note it cannot place (the ninth session's weights
    wrote 3.6 times the gold's rests on lieder-dev and 58% of its notes). Deciding "a note or not"
    first, then which pitch, removes that bias and is still one deterministic pass.
    """
    pitch_mask = pitch_mask.to(logp.device)
    pitches = logp.masked_fill(~pitch_mask, float("-inf"))
    others = logp.masked_fill(pitch_mask, float("-inf"))
    pitch_logp, pitch = pitches.max(dim=-1)
    other_logp, other = others.max(dim=-1)
    use_pitch = torch.logsumexp(pitches, dim=-1) > other_logp
    return torch.where(use_pitch, pitch, other), torch.where(use_pitch, pitch_logp, other_logp)


def greedy_decode(model: OMRModel, images: torch.Tensor, widths: torch.Tensor, max_len: int | None = None,
                  constrained: bool = False, group_pitches: bool = False,
                  read_header: bool = False, on_step=None, runaway: RunawayLimits | None = None) -> list[DecodeResult]:
    """Most probable token at each step, for each image of the batch; with `group_pitches`, the pitch
    tokens compete as one (`pitch_grouped_argmax`), with `read_header` a model's header head names
    the key and time signature (`HeaderReader`), and with `runaway` limits a looping piece is closed
    early (`RunawayLimits`), as the product decodes."""
    max_len = resolve_max_len(model, max_len)
    grammar = grammar_for(constrained)
    B, device = images.shape[0], images.device
    with eval_mode(model):
        cache, header = _start(model, images, widths, max_len, 1, read_header)

        def pick(last, finished, states, remaining):
            logp = next_token_logprobs(model, cache, last, finished, states, grammar, remaining)
            if group_pitches:
                token, token_logp = pitch_grouped_argmax(logp)
            else:
                token_logp, token = logp.max(dim=-1)
            if header is not None:
                token, token_logp = header.apply(token, token_logp, logp, finished)
            return token, token_logp

        ids, logps, _, tripped = decode_steps(B, device, max_len, grammar, pick, on_step, runaway)
    return collect_results(ids, logps, tripped.tolist())


def collect_results(ids: torch.Tensor, logps: torch.Tensor, runaway: list[bool] | None = None) -> list[DecodeResult]:
    """Rows of generated ids (padded after <eos>) -> DecodeResults."""
    results = []
    runaway = runaway or [False] * ids.shape[0]
    for row_ids, row_logp, cut in zip(ids.tolist(), logps.tolist(), runaway):
        n = len(row_ids)
        finished = EOS_ID in row_ids
        if finished:
            n = row_ids.index(EOS_ID) + 1
        logp = row_logp[:n]
        total = float(sum(logp))
        confidence = float(torch.tensor(logp).exp().mean()) if n else 0.0
        kept = n - 1 if finished else n
        results.append(DecodeResult(row_ids[:kept], total, confidence, finished, logp[:kept], runaway=cut))
    return results


def beam_search(model: OMRModel, images: torch.Tensor, widths: torch.Tensor, beam_size: int = 4,
                max_len: int | None = None, constrained: bool = False) -> list[DecodeResult]:
    """Keep the beam_size best partial sequences (by summed log-prob) per image.

    The final choice among the beam ranks by mean token log-prob, so longer
    transcriptions are not penalised for their length. beam_size=1 is greedy.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    max_len = resolve_max_len(model, max_len)
    grammar = grammar_for(constrained)
    B, K, device = images.shape[0], beam_size, images.device
    R = B * K
    with eval_mode(model):
        cache, _ = _start(model, images, widths, max_len, K)
        last = torch.full((R,), BOS_ID, dtype=torch.long, device=device)
        states = grammar.initial(R, device) if grammar else None
        finished = torch.zeros(R, dtype=torch.bool, device=device)
        scores = torch.full((B, K), float("-inf"), device=device)
        scores[:, 0] = 0.0  # all beams start identical: expand only the first
        ids = torch.empty((R, 0), dtype=torch.long, device=device)
        logps = torch.empty((R, 0), device=device)
        for step in range(max_len):
            logp = next_token_logprobs(model, cache, last, finished, states, grammar, max_len - step)
            # (a finished beam can only continue with <pad>, at no cost)
            V = logp.shape[1]
            candidates = (scores.view(R, 1) + logp).view(B, K * V)
            scores, flat = candidates.topk(K, dim=1)
            origin = (torch.arange(B, device=device)[:, None] * K + flat // V).view(R)
            token = (flat % V).view(R)
            # fewer than K possible continuations (e.g. the first step): the extra beams are dead
            dead = ~torch.isfinite(scores.view(R))
            token = torch.where(dead, PAD_ID, token)
            cache.reorder(origin)
            token_logp = torch.where(dead, 0.0, logp[origin, token])
            ids = torch.cat([ids[origin], token[:, None]], dim=1)
            logps = torch.cat([logps[origin], token_logp[:, None]], dim=1)
            finished = finished[origin] | (token == EOS_ID) | dead
            if grammar is not None:
                states = grammar.advance(torch.where(dead, grammar.done_state, states[origin]), token)
            if bool(finished.all()):
                break
            last = token
        lengths = (ids != PAD_ID).sum(dim=1).clamp(min=1)
        mean = (scores.view(R) / lengths).view(B, K)
        mean = torch.where(torch.isfinite(mean), mean, torch.full_like(mean, float("-inf")))
        best = torch.arange(B, device=device) * K + mean.argmax(dim=1)
    return collect_results(ids[best], logps[best])


def sample(model: OMRModel, images: torch.Tensor, widths: torch.Tensor, n_samples: int, temperature: float = 1.0,
           top_k: int | None = None, max_len: int | None = None, constrained: bool = False) -> SampleResult:
    """Draw n_samples sequences per image, all images and samples in one batch (for GRPO).

    Logits are divided by ``temperature`` and, with ``top_k``, cut to the k most
    likely tokens; ``logprobs`` are under that (tempered, truncated, masked)
    distribution and carry no gradient.
    """
    if n_samples < 1 or temperature <= 0:
        raise ValueError("n_samples must be >= 1 and temperature > 0")
    max_len = resolve_max_len(model, max_len)
    grammar = grammar_for(constrained)
    B, device = images.shape[0], images.device
    R = B * n_samples
    with eval_mode(model):
        cache, _ = _start(model, images, widths, max_len, n_samples)

        def pick(last, finished, states, remaining):
            logits = model.decoder(last[:, None], None, None, cache=cache)[:, -1].float() / temperature
            logits = mask_logits(logits, finished, states, grammar, remaining)
            if top_k is not None and top_k < logits.shape[1]:
                kth = logits.topk(top_k, dim=1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            logp = F.log_softmax(logits, dim=-1)
            token = torch.multinomial(logp.exp(), 1).squeeze(1)
            return token, logp.gather(1, token[:, None]).squeeze(1)

        ids, logps, finished, _ = decode_steps(R, device, max_len, grammar, pick)
    return SampleResult(
        token_ids=ids,
        logprobs=logps,
        lengths=(ids != PAD_ID).sum(dim=1),
        finished=finished,
        image_index=torch.arange(B, device=device).repeat_interleave(n_samples),
    )


def compile_decoder(model):
    """The model with its decoder step under torch.compile, compiled now on a blank image.

    For long-lived workers only: the tokens are identical, the speed-up is not reliable
    (bench/bench_inference.py: 1.1x faster in two runs, 1.2x slower in a third), and compiling
    costs tens of seconds per process.
    Compiling needs a C++ compiler; when it fails, the eager model is returned and the
    reason printed, so a worker starts either way.
    """
    eager = model.decoder
    model.decoder = torch.compile(eager, dynamic=True)
    device = next(model.parameters()).device
    cfg = model.cfg
    try:
        with torch.inference_mode():
            for batch in (1, 2):  # the second batch size makes the compiled graphs batch-generic
                images = torch.ones(batch, 1, cfg.image_height, 4 * cfg.patch_width, device=device)
                widths = torch.full((batch,), 4 * cfg.patch_width, device=device)
                greedy_decode(model, images, widths, max_len=4, constrained=True)
    except Exception as error:  # no compiler, unsupported platform: run eager
        print(f"torch.compile unavailable, decoding without it: {type(error).__name__}: {str(error)[:200]}",
              file=sys.stderr)
        model.decoder = eager
    return model
