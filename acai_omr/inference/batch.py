"""Decode many system crops together, and turn the results into one score.

Batching is where CPU inference gets its speed: the crops of a page (or of a
whole job) are sorted by width so a batch wastes little padding, each batch is
encoded once and decoded step by step with the KV cache for all its rows at
once. The web jobs, the RQ workers and `acai-omr transcribe` all go through
here, so they produce the same tokens for the same crops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from acai_omr.data.preprocess import gray_pixels, reading_pieces
from acai_omr.inference.assemble import BREAK_PAGE, BREAK_SYSTEM, assemble_score
from acai_omr.inference.confidence import confidence_words, system_confidence
from acai_omr.inference.decode import DecodeResult, RunawayLimits, beam_search, greedy_decode
from acai_omr.lmx.delinearize import delinearize


def decode_crops(model, crops, read_measures: int | None = None, **options) -> list[DecodeResult]:
    """Grayscale (or RGB/RGBA) PIL crops, one system each -> DecodeResult per crop, in the input order.

    Each crop is cut into the pieces the model reads (`system_pieces`; whole
    systems unless `read_measures`, default the model's `cfg.read_measures`, is
    set). Options are those of `decode_prepared`.
    """
    per_piece = model.cfg.read_measures if read_measures is None else read_measures
    return decode_systems(model, [system_pieces(crop, model.cfg, per_piece) for crop in crops], **options)


def system_pieces(crop, cfg, read_measures: int) -> list[tuple[torch.Tensor, int]]:
    """One system crop (PIL) -> model-ready pieces, left to right: runs of `read_measures` measures cut at
    the barlines (`acai_omr.detect.barlines.reading_spans`), or the whole crop when that is 0."""
    pieces = reading_pieces(gray_pixels(crop), cfg.image_height, cfg.max_image_width, read_measures)
    return [(piece, piece.shape[-1]) for piece in pieces]


def decode_systems(model, systems: list[list[tuple[torch.Tensor, int]]], *,
                   on_batch: Callable[[list[int], list[DecodeResult]], None] | None = None,
                   on_tokens: Callable[[dict[int, int]], None] | None = None,
                   **options) -> list[DecodeResult]:
    """Systems given as one or more model-ready pieces each -> one DecodeResult per system, in order.

    All pieces of all systems are batched together (`decode_prepared`); a
    system's result joins its pieces' results left to right (`join_results`).
    `on_batch(system indices, results)` is called for the systems whose last
    piece was in the batch just decoded.
    """
    if any(not pieces for pieces in systems):
        raise ValueError("every system needs at least one piece")
    flat, owner, slot = [], [], []
    for index, pieces in enumerate(systems):
        for position, piece in enumerate(pieces):
            flat.append(piece)
            owner.append(index)
            slot.append(position)
    parts: list[list[DecodeResult | None]] = [[None] * len(pieces) for pieces in systems]
    waiting = [len(pieces) for pieces in systems]

    def collect(indices: list[int], decoded: list[DecodeResult]) -> None:
        completed = []
        for i, result in zip(indices, decoded):
            parts[owner[i]][slot[i]] = result
            waiting[owner[i]] -= 1
            if waiting[owner[i]] == 0:
                completed.append(owner[i])
        if on_batch is not None and completed:
            on_batch(completed, [join_results(parts[s]) for s in completed])

    written = [0] * len(flat)  # tokens each piece has written so far
    pieces_of: dict[int, list[int]] = {}
    for i, s in enumerate(owner):
        pieces_of.setdefault(s, []).append(i)

    def tokens_so_far(indices: list[int], counts: list[int]) -> None:
        for i, count in zip(indices, counts):
            written[i] = count
        touched = {owner[i] for i in indices}
        on_tokens({s: sum(written[i] for i in pieces_of[s]) for s in touched})

    decode_prepared(model, flat, on_batch=collect, on_step=tokens_so_far if on_tokens else None, **options)
    return [join_results(pieces) for pieces in parts]  # type: ignore[arg-type]


def join_results(pieces: list[DecodeResult]) -> DecodeResult:
    """One system's result from its pieces' results, left to right: tokens concatenated, log-probabilities
    summed, confidence averaged over every generated token (each piece's <eos> included), finished only
    if every piece finished."""
    if len(pieces) == 1:
        return pieces[0]
    counts = [len(p.token_ids) + 1 for p in pieces]
    return DecodeResult(token_ids=[t for p in pieces for t in p.token_ids],
                        token_logprobs=[v for p in pieces for v in p.token_logprobs],
                        logprob=sum(p.logprob for p in pieces),
                        confidence=sum(p.confidence * n for p, n in zip(pieces, counts)) / sum(counts),
                        finished=all(p.finished for p in pieces), runaway=any(p.runaway for p in pieces))


def decode_prepared(model, prepared: list[tuple[torch.Tensor, int]], *, batch_size: int = 8, beam: int = 1,
                    max_len: int | None = None, constrained: bool = True, group_pitches: bool = True,
                    read_header: bool = True, stop_runaways: bool = True,
                    on_batch: Callable[[list[int], list[DecodeResult]], None] | None = None,
                    on_step: Callable[[list[int], list[int]], None] | None = None) -> list[DecodeResult]:
    """Model-ready images ([1, H, W] tensors with their valid widths) -> DecodeResult each, in the input order.

    Greedy decoding (beam 1) writes the key and time signature the weights' header head reads unless
    `read_header` is False (`acai_omr.inference.decode.HeaderReader`), and
    lets the pitch tokens compete as one unless `group_pitches` is False
    (`acai_omr.inference.decode.pitch_grouped_argmax`), and closes a looping piece early unless
    `stop_runaways` is False (`acai_omr.inference.decode.RunawayLimits`).

    Images are sorted by width and decoded `batch_size` at a time (padded with
    white to the widest of the batch). `on_step(indices, tokens written)` hears greedy decoding's
    progress within a batch. `on_batch(indices, results)` is called
    after each batch; it may raise (e.g. to cancel), which stops decoding.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    results: list[DecodeResult | None] = [None] * len(prepared)
    with torch.inference_mode():
        for indices, images, widths in padded_batches(prepared, batch_size, model.cfg.patch_width):
            images, widths = images.to(device), widths.to(device)
            if beam > 1:
                decoded = beam_search(model, images, widths, beam_size=beam, max_len=max_len, constrained=constrained)
            else:
                step = None if on_step is None else (lambda counts, rows=indices: on_step(rows, counts))
                decoded = greedy_decode(model, images, widths, max_len=max_len, constrained=constrained,
                                        group_pitches=group_pitches, read_header=read_header, on_step=step,
                                        runaway=RunawayLimits() if stop_runaways else None)
            for i, result in zip(indices, decoded):
                results[i] = result
            if on_batch is not None:
                on_batch(indices, decoded)
    return results  # type: ignore[return-value]


def padded_batches(prepared: list[tuple[torch.Tensor, int]], batch_size: int, patch_width: int):
    """Yield (indices, images [b,1,H,W], valid widths [b]): the images sorted by width, `batch_size` at a
    time, padded with white to the widest of the batch (rounded up to whole patches)."""
    order = sorted(range(len(prepared)), key=lambda i: prepared[i][0].shape[-1])
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        width = max(prepared[i][0].shape[-1] for i in indices)
        width = -(-width // patch_width) * patch_width
        images = torch.ones((len(indices), 1, prepared[indices[0]][0].shape[-2], width))
        for row, i in enumerate(indices):
            image = prepared[i][0]
            images[row, :, :, : image.shape[-1]] = image
        yield indices, images, torch.tensor([prepared[i][1] for i in indices])


@dataclass
class SystemResult:
    """One decoded system, ready for output: its tokens, what they delinearize to, and quality signals."""

    page: int  # 1-based page of the input the system came from
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) on that page, pixels
    tokens: list[str]
    confidence: float  # `acai_omr.inference.confidence.system_confidence` (mean probability of its pitches)
    finished: bool  # the decoder produced <eos> (False: cut at the length limit)
    delinearized: object = None  # acai_omr.lmx.delinearize.DelinearizeResult
    repairs: list[str] = field(default_factory=list)  # what `assemble` changed to make the score coherent

    @property
    def part(self):
        """The <part> element (xml.etree), or None if nothing could be read."""
        return self.delinearized.part

    @property
    def errors(self) -> list[str]:
        """The delinearizer's soft errors (tokens it had to skip or repair)."""
        return list(self.delinearized.errors)

    def musicxml(self) -> str:
        """This system alone as a MusicXML score."""
        return self.delinearized.to_musicxml()

    def to_json(self) -> dict:
        return {"page": self.page, "box": [round(v, 1) for v in self.box], "lmx": " ".join(self.tokens),
                "tokens": len(self.tokens), "confidence": round(self.confidence, 4),
                "confidence_words": confidence_words(self.confidence), "finished": self.finished,
                "errors": self.errors, "repairs": list(self.repairs), "readable": self.part is not None}


def system_results(decoded: list[DecodeResult], pages: list[int], boxes) -> list[SystemResult]:
    """Delinearize each decoded system; a malformed token sequence yields part=None, never an exception."""
    return [SystemResult(page, tuple(float(v) for v in box), result.tokens,
                         system_confidence(result.tokens, result.token_logprobs) if result.token_logprobs
                         else float(result.confidence), bool(result.finished), delinearize(result.tokens))
            for result, page, box in zip(decoded, pages, boxes)]


def assemble(systems: list[SystemResult], title: str = "") -> str:
    """One MusicXML score from the systems in reading order: system breaks, page breaks between pages; one
    key, a time signature and full measures (each system's `repairs` says what was changed)."""
    breaks, previous = [], None
    for system in systems:
        breaks.append(BREAK_PAGE if previous is not None and system.page != previous else BREAK_SYSTEM)
        previous = system.page
    repairs: list[list[str]] = []
    musicxml = assemble_score([s.part for s in systems], breaks, title=title, repairs=repairs)
    for system, made in zip(systems, repairs):
        system.repairs = made
    return musicxml
