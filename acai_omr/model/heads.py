"""The encoder's auxiliary heads: read-outs of the memory that give the encoder something to learn
from the first training step (what symbols an image holds, its own pixels, its notes in reading
order, which pitch sits in which patch). Used in training only (`train.supervised`); none is part of
the shipped weights. The header head, which reads the key and time signature at inference, and the
PitchPointer's note map, which the decoder reads pitches from, are in `model.py` with the model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from acai_omr.lmx.reading_order import NOTE_LABELS
from acai_omr.lmx.vocab import VOCAB
from acai_omr.model.mae import patchify

PAD_ID = VOCAB.pad_id


def symbol_presence(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[B, V] float: 1 where the token occurs in the row (pad, bos and eos never count)."""
    present = torch.zeros(tokens.shape[0], vocab_size, device=tokens.device)
    present.scatter_(1, tokens, 1.0)
    present[:, [PAD_ID, VOCAB.bos_id, VOCAB.eos_id]] = 0.0
    return present


class SymbolPresenceHead(nn.Module):
    """Auxiliary encoder loss: which LMX tokens occur in the system, from per-patch logits max-pooled
    over the image. Every patch has to say what it shows, so the encoder learns local symbol features
    from the first step instead of waiting for the decoder's cross-attention to ask for them."""

    def __init__(self, dim: int, vocab_size: int, prior: float = 0.02):
        super().__init__()
        self.proj = nn.Linear(dim, vocab_size)
        # start at the rarity of a symbol (most tokens are absent from a system), not at 50%: from a zero
        # bias the loss fell only 0.69 -> 0.62 in 175 steps (base rate 0.19), AdamW moving ~lr per step
        nn.init.constant_(self.proj.bias, math.log(prior / (1.0 - prior)))

    def forward(self, memory: torch.Tensor, valid: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.proj(memory.float())  # [B, N, V]
        pooled = logits.masked_fill(~valid[..., None], float("-inf")).amax(dim=1)
        return F.binary_cross_entropy_with_logits(pooled, symbol_presence(tokens, logits.shape[-1]))


class PatchReconstructionHead(nn.Module):
    """Auxiliary encoder loss: each memory token redraws the ink of its own patch (a linear read-out).

    Measured on every CPU run before it existed: the encoder's output collapsed to one vector for
    every patch and every image (spread across patches ~0.003 against ~0.5 at initialisation), so
    cross-attention was uniform and the decoder became a language model of LMX. While the image
    is still noise to the decoder, the cheapest way to lower its loss is to silence the encoder.
    Having to redraw each patch keeps what the encoder sees in its output until the decoder learns
    to read it.
    """

    def __init__(self, dim: int, patch_height: int, patch_width: int):
        super().__init__()
        self.patch_height, self.patch_width = patch_height, patch_width
        self.proj = nn.Linear(dim, patch_height * patch_width)

    def forward(self, memory: torch.Tensor, valid: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        ink = patchify(1.0 - images.float(), self.patch_height, self.patch_width)  # [B, N, ph*pw], 0 = paper
        per_patch = ((self.proj(memory.float()) - ink) ** 2).mean(dim=-1)
        weight = valid.float()
        return (per_patch * weight).sum() / weight.sum().clamp(min=1.0)


class ReadingOrderCTCHead(nn.Module):
    """Auxiliary encoder loss: name the image's notes in reading order (CTC over the patch grid).

    The presence and reconstruction losses left the encoder blind (see the model card): what
    it must learn is where each notehead is and which pitch that makes, and the decoder's
    cross-attention only asks for that once the encoder already offers it. Here a linear
    read-out of the memory, taken column by column and top to bottom, must spell the notes
    ordered as the page shows them (`acai_omr.lmx.reading_order`), so every patch is told
    what it holds from the first step, as a CTC text-line recogniser is. LMX ids are the
    labels; <pad> is the CTC blank.
    """

    def __init__(self, dim: int, vocab_size: int, rows: int):
        super().__init__()
        self.rows = rows
        self.proj = nn.Linear(dim, vocab_size)

    def forward(self, memory: torch.Tensor, valid: torch.Tensor, targets: list[list[int]]) -> torch.Tensor:
        B, N, D = memory.shape
        cols = N // self.rows
        columns = memory.float().view(B, self.rows, cols, D).transpose(1, 2).reshape(B, cols * self.rows, D)
        log_probs = F.log_softmax(self.proj(columns), dim=-1).transpose(0, 1)  # [T, B, V]
        input_lengths = valid.view(B, self.rows, cols)[:, 0].sum(dim=1) * self.rows
        target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
        flat = torch.tensor([i for t in targets for i in t], dtype=torch.long)
        return F.ctc_loss(log_probs, flat, input_lengths.cpu(), target_lengths, blank=PAD_ID,
                          reduction="mean", zero_infinity=True)


class NoteMapHead(nn.Module):
    """Auxiliary encoder loss: which pitches' noteheads (and which rests) each patch holds.

    The CTC read-out only says what the notes are, in order, and leaves the encoder to find
    where; the engraver knows where (`acai_omr.data.verovio_render.drawn_notes`, carried
    through crops and distortions by the dataset). Each patch's memory vector gets a
    linear read-out scored by binary cross-entropy against the labels of the notes whose
    centres fall in it: summed over labels, averaged over the real patches of the images
    that have notes recorded (MuseScore renders do not). Pitch is then a local property
    of the memory, which the decoder's cross-attention can look up.
    """

    def __init__(self, dim: int, rows: int, patch_height: int, patch_width: int, read_out: bool = True):
        super().__init__()
        self.rows, self.patch_height, self.patch_width = rows, patch_height, patch_width
        # without a read-out of its own the head only scores another's (`loss`): the model's PitchPointer map
        self.proj = nn.Linear(dim, len(NOTE_LABELS)) if read_out else None
        if self.proj is not None:
            # start from the prior (a patch rarely holds a given label): at bias 0 the first steps' loss is
            # 71 x ln 2 per patch, and its gradient would shake a pretrained encoder before the head learns anything
            nn.init.constant_(self.proj.bias, -5.0)

    def targets(self, note_points: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
        """[M, 4] (row, x, y, label) -> [B, patches, labels] of 0/1, patches row-major as the encoder's."""
        B, N, L = shape
        cols = N // self.rows
        target = torch.zeros(B, N, L, device=note_points.device)
        if len(note_points):
            row = note_points[:, 0].long()
            r = (note_points[:, 2] // self.patch_height).long().clamp(0, self.rows - 1)
            c = (note_points[:, 1] // self.patch_width).long().clamp(0, cols - 1)
            target[row, r * cols + c, note_points[:, 3].long()] = 1.0
        return target

    def forward(self, memory: torch.Tensor, valid: torch.Tensor, note_points: torch.Tensor,
                has_notes: torch.Tensor) -> torch.Tensor:
        return self.loss(self.proj(memory.float()), valid, note_points, has_notes)

    def loss(self, logits: torch.Tensor, valid: torch.Tensor, note_points: torch.Tensor,
             has_notes: torch.Tensor) -> torch.Tensor:
        """The loss of any note-map read-out's logits [B, N, labels] (this head's, or the model's own
        when its `PitchPointer` holds the map)."""
        logits = logits.float()
        target = self.targets(note_points, logits.shape)
        per_patch = F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)
        counted = valid & has_notes[:, None]
        return (per_patch * counted).sum() / counted.sum().clamp(min=1)
