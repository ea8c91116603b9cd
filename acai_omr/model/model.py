"""The image-to-LMX model: a ViT encoder over one system image and an LMX token decoder.

Shapes used below: B batch, H/W image height/width in pixels, N patches,
T tokens, D model width, V vocabulary size.

* ``ViTEncoder``: a grid of patch tokens (patch_height x patch_width pixels
  each) of a grayscale image whose height is fixed and whose width varies (the
  aspect ratio is kept; no square resize). The tokens come from a small
  convolutional stem (``ConvStem``, the default) or, in configs saved before
  it existed, from one linear projection per patch. Position is a fixed 2-D sin-cos embedding,
  so any width up to ``max_image_width`` works. Images in a batch are padded on
  the right; patch columns beyond each image's width are masked out of
  attention, so padding never changes the outputs on real patches.
  With ``center_memory`` the output is centred over each image's patches
  before the final LayerNorm: what the decoder reads is how a patch differs
  from the rest of its image. Without it, every CPU run collapsed the encoder
  to one shared vector (a bias in its last block outweighing the content), the
  cheapest way to silence an image the decoder could not yet use.
* ``LMXDecoder``: pre-LN transformer decoder (causal self-attention,
  cross-attention to the encoder memory, MLP) whose output projection is tied
  to ``token_embedding``. ``DecoderCache`` holds the key/value cache used for
  step-by-step decoding (see acai_omr.inference.decode).
* ``PitchPointer`` (``ModelConfig.pitch_pointer``): the decoder's pitch tokens reshaped by
  the note map's pitches where a pointer head of the decoder looks.
* ``OMRModel``: both, plus ``encode`` for decoding.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from acai_omr.config import ModelConfig
from acai_omr.lmx.reading_order import NOTE_LABELS
from acai_omr.lmx.vocab import BEAT_TYPE_TOKENS, BEATS_TOKENS, KEY_TOKENS, PITCH_TOKENS, TIME, VOCAB

# ---------------------------------------------------------------------------
# position embeddings


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """[P] positions -> [P, dim] sin/cos features (dim even), as in the original transformer."""
    assert dim % 2 == 0
    freqs = torch.exp(-math.log(10000.0) * torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    angles = positions.to(torch.float64)[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_2d(rows: int, cols: int, dim: int) -> torch.Tensor:
    """[rows*cols, dim] row-major grid embedding: half the channels encode the row, half the column."""
    assert dim % 4 == 0, "the 2-D sin-cos embedding needs a width divisible by 4"
    row_emb = sincos_1d(torch.arange(rows), dim // 2)  # [rows, dim/2]
    col_emb = sincos_1d(torch.arange(cols), dim // 2)  # [cols, dim/2]
    grid = torch.cat(
        [row_emb[:, None, :].expand(rows, cols, -1), col_emb[None, :, :].expand(rows, cols, -1)], dim=2
    )
    return grid.reshape(rows * cols, dim)


# ---------------------------------------------------------------------------
# building blocks


class MLP(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, dropout: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc = nn.Linear(dim, hidden)
        self.proj = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Attention(nn.Module):
    """Multi-head attention over F.scaled_dot_product_attention (self- or cross-)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        assert dim % heads == 0, f"width {dim} is not divisible by {heads} heads"
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, D] -> [B, heads, L, D/heads]
        B, L, D = x.shape
        return x.view(B, L, self.heads, D // self.heads).transpose(1, 2)

    def keys_values(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(source).chunk(2, dim=-1)
        return self.split_heads(k), self.split_heads(v)

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask=None, is_causal=False) -> torch.Tensor:
        """Queries from x [B,Tq,D] against prepared heads k/v; mask is bool (True = may attend)."""
        q = self.split_heads(self.q(x))
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal)
        B, _, Tq, _ = out.shape
        return self.resid_dropout(self.proj(out.transpose(1, 2).reshape(B, Tq, -1)))

    def forward(self, x: torch.Tensor, source: torch.Tensor, mask=None, is_causal=False) -> torch.Tensor:
        k, v = self.keys_values(source)
        return self.attend(x, k, v, mask=mask, is_causal=is_causal)


class EncoderBlock(nn.Module):
    """Pre-LN transformer block: self-attention + MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, mask=key_mask)
        return x + self.mlp(self.ln2(x))


def masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[B,N,D] tokens, [B,N] bool -> [B,1,D] mean over each row's valid tokens."""
    weight = valid.to(x.dtype)[..., None]
    return (x * weight).sum(dim=1, keepdim=True) / weight.sum(dim=1, keepdim=True).clamp(min=1.0)


def key_padding_mask(valid: torch.Tensor) -> torch.Tensor:
    """[B, N] bool (True = real) -> SDPA mask [B, 1, 1, N] broadcast over heads and queries."""
    return valid[:, None, None, :]


# ---------------------------------------------------------------------------
# encoder


class ConvStem(nn.Module):
    """Image -> patch-grid features through stride-2 3x3 convolutions (a ViT-hybrid stem).

    A linear patch embedding has to learn every symbol at every offset inside a
    patch; convolutions share those detectors across positions, which is what a
    small model trained on little data needs ("early convolutions help
    transformers see better", Xiao et al. 2021). Each layer halves the height
    and/or width until one cell per patch is left; a 1x1 convolution then maps
    to the encoder width. Activations right of each image's true width are
    zeroed after every layer, so the padding a batch adds never reaches a real
    patch (the same outputs as the image alone).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        steps_h, steps_w = _log2_exact(cfg.patch_height), _log2_exact(cfg.patch_width)
        self.strides = [(2 if i < steps_h else 1, 2 if i < steps_w else 1) for i in range(max(steps_h, steps_w))]
        layers, norms, channels = [], [], 1
        for i, stride in enumerate(self.strides):
            out = min(cfg.stem_channels * 2 ** i, cfg.enc_dim)
            layers.append(nn.Conv2d(channels, out, kernel_size=3, stride=stride, padding=1))
            norms.append(nn.LayerNorm(out))
            channels = out
        self.convs, self.norms = nn.ModuleList(layers), nn.ModuleList(norms)
        self.proj = nn.Conv2d(channels, cfg.enc_dim, kernel_size=1)
        self.out_norm = nn.LayerNorm(cfg.enc_dim)

    def forward(self, ink: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        """ink [B,1,H,W] (0 = paper), widths [B] -> [B, D, H/ph, W/pw].

        Each layer normalises over channels at every position (never across
        positions, so padding cannot leak in): sparse ink would otherwise leave
        the patch tokens a small ripple on the position embedding (measured at
        initialisation: content 0.07 std against 0.57 for the positions).
        """
        for conv, norm, (_, stride_w) in zip(self.convs, self.norms, self.strides):
            ink = F.gelu(_channel_norm(norm, conv(ink)))
            widths = (widths + stride_w - 1) // stride_w
            inside = torch.arange(ink.shape[3], device=ink.device)[None, :] < widths[:, None]
            ink = ink * inside[:, None, None, :].to(ink.dtype)
        return _channel_norm(self.out_norm, self.proj(ink))


class LinearStem(nn.Conv2d):
    """One linear projection per patch (the original ViT's patch embedding); a Conv2d subclass so the
    weights saved before the conv stem existed keep their names. Takes `widths` like ConvStem."""

    def __init__(self, cfg: ModelConfig):
        patch = (cfg.patch_height, cfg.patch_width)
        super().__init__(1, cfg.enc_dim, kernel_size=patch, stride=patch)

    def forward(self, ink: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        return super().forward(ink)  # patches never overlap, so padding cannot reach a real patch


def _channel_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the channels of [B, C, H, W] at each position."""
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _log2_exact(n: int) -> int:
    if n < 1 or n & (n - 1):
        raise ValueError(f"the conv stem needs power-of-two patch sizes, got {n}")
    return n.bit_length() - 1


class ViTEncoder(nn.Module):
    """Patch embedding + fixed 2-D sin-cos positions + transformer blocks, padding-aware."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.image_height % cfg.patch_height or cfg.max_image_width % cfg.patch_width:
            raise ValueError("image_height / max_image_width must be multiples of the patch size")
        self.cfg = cfg
        self.rows = cfg.image_height // cfg.patch_height
        self.max_cols = cfg.max_image_width // cfg.patch_width
        stems = {"conv": ConvStem, "linear": LinearStem}
        if cfg.stem not in stems:
            raise ValueError(f"unknown stem {cfg.stem!r}: expected 'conv' or 'linear'")
        self.patch_embed = stems[cfg.stem](cfg)
        # [rows, max_cols, D]; slicing the first `cols` columns gives the grid of any narrower image
        pos = sincos_2d(self.rows, self.max_cols, cfg.enc_dim).view(self.rows, self.max_cols, cfg.enc_dim)
        self.register_buffer("pos_embed", pos, persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            EncoderBlock(cfg.enc_dim, cfg.enc_heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.enc_depth)
        )
        self.norm = nn.LayerNorm(cfg.enc_dim)

    def check_input(self, images: torch.Tensor, widths: torch.Tensor) -> None:
        cfg = self.cfg
        if images.dim() != 4 or images.shape[1] != 1 or images.shape[2] != cfg.image_height:
            raise ValueError(f"images must be [B, 1, {cfg.image_height}, W], got {list(images.shape)}")
        W = images.shape[3]
        if W % cfg.patch_width or W > cfg.max_image_width:
            raise ValueError(f"image width {W} must be a multiple of {cfg.patch_width} "
                             f"and at most {cfg.max_image_width}")
        if widths.shape != (images.shape[0],) or int(widths.min()) < 1 or int(widths.max()) > W:
            raise ValueError(f"widths must be B values in 1..{W}, got {widths.tolist()}")

    def embed_patches(self, images: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B,1,H,W], widths [B] -> (patch tokens with positions [B,N,D], valid [B,N] bool).

        Pixels right of each image's width are set to white first, so a partly
        filled last column sees the same input however the batch was padded.
        """
        self.check_input(images, widths)
        B, _, H, W = images.shape
        x_coords = torch.arange(W, device=images.device)
        inside = x_coords[None, :] < widths[:, None]  # [B, W]
        images = torch.where(inside[:, None, None, :], images, torch.ones((), dtype=images.dtype,
                                                                          device=images.device))
        # 0 = white paper, 1 = ink: the convolution then sees padding as zero input.
        x = self.patch_embed(1.0 - images, widths)  # [B, D, rows, cols]
        cols = x.shape[3]
        x = x + self.pos_embed[:, :cols].permute(2, 0, 1)[None]
        x = x.flatten(2).transpose(1, 2)  # [B, rows*cols, D], row-major
        return x, self.valid_patches(widths, cols)

    def valid_patches(self, widths: torch.Tensor, cols: int) -> torch.Tensor:
        """[B, rows*cols] bool, row-major: True for patches that hold any of the image (not padding)."""
        pw = self.cfg.patch_width
        valid_cols = torch.arange(cols, device=widths.device)[None, :] < ((widths + pw - 1) // pw)[:, None]
        return valid_cols[:, None, :].expand(widths.shape[0], self.rows, cols).reshape(widths.shape[0], -1)

    def run_blocks(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Transformer blocks over tokens x [B,N,D]; only keys with valid=True are attended to."""
        mask = key_padding_mask(valid)
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x, mask)
        if self.cfg.center_memory:
            x = x - masked_mean(x, valid)
        return self.norm(x)

    def forward(self, images: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B,1,H,W] (1 = white, 0 = ink), widths [B] valid pixel widths -> (memory [B,N,D], valid [B,N])."""
        x, valid = self.embed_patches(images, widths)
        return self.run_blocks(x, valid), valid


# ---------------------------------------------------------------------------
# decoder


class DecoderCache:
    """Key/value cache for step-by-step decoding.

    Cross-attention keys/values are computed once from the memory; self-attention
    keys/values are written into preallocated buffers as tokens arrive.
    ``reorder`` follows beam-search reshuffles; ``length`` is the number of
    positions already decoded (the same for every row).
    """

    def __init__(self, decoder: "LMXDecoder", memory: torch.Tensor, memory_valid: torch.Tensor, max_len: int,
                 raw_memory: torch.Tensor | None = None):
        B = memory.shape[0]
        cfg = decoder.cfg
        head_dim = cfg.dec_dim // cfg.dec_heads
        self.max_len = max_len
        self.length = 0
        self.cross = [block.cross_attn.keys_values(memory) for block in decoder.blocks]
        self.cross_mask = key_padding_mask(memory_valid)
        shape = (B, cfg.dec_heads, max_len, head_dim)
        self.self_k = [memory.new_zeros(shape) for _ in decoder.blocks]
        self.self_v = [memory.new_zeros(shape) for _ in decoder.blocks]
        self.memory_valid = memory_valid
        self.pointer = None if decoder.pointer is None else decoder.pointer.prepare(raw_memory, memory)

    def reorder(self, index: torch.Tensor) -> None:
        """Keep/duplicate batch rows: row i becomes old row index[i]."""
        self.cross = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.cross]
        self.cross_mask = self.cross_mask.index_select(0, index)
        self.memory_valid = self.memory_valid.index_select(0, index)
        if self.pointer is not None:
            self.pointer = tuple(t.index_select(0, index) for t in self.pointer)
        self.self_k = [k.index_select(0, index) for k in self.self_k]
        self.self_v = [v.index_select(0, index) for v in self.self_v]


class DecoderBlock(nn.Module):
    """Pre-LN: causal self-attention, cross-attention to the image, MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, heads, dropout)
        self.ln3 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio, dropout)

    def forward(self, x, memory, memory_mask, cache: DecoderCache | None = None, layer: int = 0):
        h = self.ln1(x)
        if cache is None:
            x = x + self.self_attn(h, h, is_causal=True)
            x = x + self.cross_attn(self.ln2(x), memory, mask=memory_mask)
        else:
            start, T = cache.length, x.shape[1]
            k_new, v_new = self.self_attn.keys_values(h)
            cache.self_k[layer][:, :, start:start + T] = k_new
            cache.self_v[layer][:, :, start:start + T] = v_new
            k = cache.self_k[layer][:, :, :start + T]
            v = cache.self_v[layer][:, :, :start + T]
            # query i (absolute position start+i) may see keys 0..start+i
            mask = None
            if T > 1:
                mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(diagonal=start)
            x = x + self.self_attn.attend(h, k, v, mask=mask)
            ck, cv = cache.cross[layer]
            x = x + self.cross_attn.attend(self.ln2(x), ck, cv, mask=cache.cross_mask)
        return x + self.mlp(self.ln3(x))


class LMXDecoder(nn.Module):
    """Autoregressive LMX token decoder with a tied input/output embedding."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.dec_dim)
        self.pos_embedding = nn.Embedding(cfg.max_tokens, cfg.dec_dim)
        self.memory_proj = nn.Identity() if cfg.enc_dim == cfg.dec_dim else nn.Linear(cfg.enc_dim, cfg.dec_dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            DecoderBlock(cfg.dec_dim, cfg.dec_heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.dec_depth)
        )
        self.norm = nn.LayerNorm(cfg.dec_dim)
        self.pointer = PitchPointer(cfg) if cfg.pitch_pointer else None

    def new_cache(self, memory: torch.Tensor, memory_valid: torch.Tensor, max_len: int) -> DecoderCache:
        """A cache for decoding up to max_len positions (<bos> included) against this memory."""
        if max_len > self.cfg.max_tokens:
            raise ValueError(f"max_len {max_len} exceeds the model's max_tokens {self.cfg.max_tokens}")
        return DecoderCache(self, self.memory_proj(memory), memory_valid, max_len, raw_memory=memory)

    def forward(self, tokens_in: torch.Tensor | None, memory: torch.Tensor | None, memory_valid: torch.Tensor | None,
                *, input_embeds: torch.Tensor | None = None, cache: DecoderCache | None = None) -> torch.Tensor:
        """tokens_in [B,T] (or input_embeds [B,T,D]) -> logits [B,T,V].

        With a cache, the tokens are the next positions after ``cache.length``;
        memory is taken from the cache (pass None) and the cache advances.
        """
        x = self.token_embedding(tokens_in) if input_embeds is None else input_embeds
        T = x.shape[1]
        start = 0 if cache is None else cache.length
        if start + T > self.cfg.max_tokens or (cache is not None and start + T > cache.max_len):
            raise ValueError(f"sequence of {start + T} tokens exceeds max_tokens {self.cfg.max_tokens}")
        x = self.dropout(x + self.pos_embedding(torch.arange(start, start + T, device=x.device)))
        if cache is None:
            raw_memory, memory = memory, self.memory_proj(memory)
            memory_mask = key_padding_mask(memory_valid)
        else:
            memory_mask = None
        for layer, block in enumerate(self.blocks):
            x = block(x, memory, memory_mask, cache=cache, layer=layer)
        if cache is not None:
            cache.length += T
        h = self.norm(x)
        logits = F.linear(h, self.token_embedding.weight)
        if self.pointer is None:
            return logits
        if cache is None:
            return self.pointer(h, logits, self.pointer.prepare(raw_memory, memory), memory_valid)
        return self.pointer(h, logits, cache.pointer, cache.memory_valid)


class PitchPointer(nn.Module):
    """Which pitch a note has, read from the image where the decoder points.

    The note map (a per-patch read-out of the encoder memory, trained by the note-map loss on
    the engraver's notehead positions) says which pitches each patch holds; its read-out
    reached 62% pitch accuracy on single-note patches while the decoder's own pitch barely
    depended on the image. Here each decoder step points at the memory (one attention head
    of its own) and the pitches there, mixed by that attention, reshape the decoder's pitch
    distribution: the decoder keeps deciding *whether* a pitch comes (the pitch tokens'
    summed probability is unchanged), and the image where it looks says *which*. The
    pointer's query starts at zero (attention spread over the whole image: the pitches the
    image holds), and `gate` weighs the image's answer against the decoder's. Measured on 15
    rendered dev systems with the twenty-third session's weights and a trained map, before any
    pointer training: teacher-forced pitch accuracy 61.9% at gate 0 (the decoder alone), 62.8%
    at 0.5, 62.1% at 1, 61.1% at 2; hence the start at 0.5. Whether training with it pays: the
    model card's A/Bs (none has shown a difference yet).
    """

    floor = 1e-4  # a pitch the map rules out is unlikely, not impossible: the map misses notes

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.note_map = nn.Linear(cfg.enc_dim, len(NOTE_LABELS))  # trained by the note-map loss (train.supervised)
        self.query = nn.Linear(cfg.dec_dim, cfg.dec_dim)
        self.key = nn.Linear(cfg.dec_dim, cfg.dec_dim)
        self.gate = nn.Parameter(torch.tensor(0.5))
        self.register_buffer("pitch_ids", torch.tensor(VOCAB.encode(PITCH_TOKENS)), persistent=False)
        self.pitch_labels = [NOTE_LABELS.index(p) for p in PITCH_TOKENS]

    def reset_parameters(self) -> None:
        """Called after the model's generic initialisation: the map starts at the prior (a patch rarely
        holds a given pitch) and the query at zero (uniform attention)."""
        nn.init.constant_(self.note_map.bias, -5.0)
        nn.init.zeros_(self.query.weight)
        nn.init.zeros_(self.query.bias)

    def prepare(self, raw_memory: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What every step reads: (keys [B,N,D], each patch's pitch probabilities [B,N,70])."""
        pitches = torch.sigmoid(self.note_map(raw_memory)[..., self.pitch_labels].float())
        return self.key(memory), pitches

    def forward(self, h: torch.Tensor, logits: torch.Tensor, prepared, valid: torch.Tensor) -> torch.Tensor:
        keys, pitches = prepared
        scores = self.query(h) @ keys.transpose(1, 2) / math.sqrt(keys.shape[-1])  # [B,T,N]
        attention = scores.float().masked_fill(~valid[:, None, :], float("-inf")).softmax(dim=-1)
        seen = attention @ pitches  # [B,T,70]
        image = torch.log(seen / seen.sum(-1, keepdim=True).clamp(min=1e-12) + self.floor)
        ids = self.pitch_ids
        decoder_pitch = logits[..., ids].float()
        mass = torch.logsumexp(decoder_pitch, dim=-1, keepdim=True)
        reshaped = mass + F.log_softmax(decoder_pitch + self.gate * image, dim=-1)
        out = logits.float().clone()
        out[..., ids] = reshaped
        return out.to(logits.dtype)


# ---------------------------------------------------------------------------
# header: key and time signature


class HeaderHead(nn.Module):
    """The key and time signature a system prints at its left end, read as a whole.

    The decoder writes the key as the second token of a system, before any note: it has to count
    the accidentals with one cross-attention read, and it guessed (the tenth session's weights
    named the key of 25% of lieder-dev systems, about as often as another system's key). Here two
    learned queries attend over the memory of the leftmost columns (`image_height` pixels wide:
    about 24 staff spaces of a grand staff, room for clefs, seven accidentals and a time
    signature) and each answers one question: the key (15 classes, fifths -7..7) and the time
    signature printed there (class 0: none, else one per beats x beat-type of the LMX vocabulary).
    Attention averages, and a key is a count of accidentals: the key answer also sees `counters`
    learned per-patch detectors summed (not averaged) over the same columns.
    """

    counters = 8

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dim = cfg.enc_dim
        self.rows = cfg.image_height // cfg.patch_height
        self.cols = max(1, cfg.image_height // cfg.patch_width)
        self.queries = nn.Parameter(torch.randn(1, 2, dim) * 0.02)
        self.attn = Attention(dim, cfg.enc_heads, 0.0)
        self.norm = nn.LayerNorm(dim)
        self.count = nn.Linear(dim, self.counters)
        self.key = nn.Linear(dim + self.counters, len(KEY_TOKENS))
        self.time = nn.Linear(dim, 1 + len(BEATS_TOKENS) * len(BEAT_TYPE_TOKENS))

    def forward(self, memory: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """memory [B,N,D], valid [B,N] -> (key logits [B, 15], time logits [B, 65])."""
        B, N, _ = memory.shape
        cols = N // self.rows
        left = (torch.arange(N, device=memory.device) % cols) < self.cols  # row-major patches
        header = valid & left[None]
        read = self.attn(self.queries.expand(B, -1, -1).to(memory.dtype), memory, mask=key_padding_mask(header))
        read = self.norm(read)
        counts = (torch.sigmoid(self.count(memory)) * header[..., None].to(memory.dtype)).sum(dim=1)
        return self.key(torch.cat([read[:, 0], torch.log1p(counts)], dim=-1)), self.time(read[:, 1])


KEY_IDS = VOCAB.encode(KEY_TOKENS)  # class k <-> key:fifths:(k - 7)
BEATS_IDS, BEAT_TYPE_IDS = VOCAB.encode(BEATS_TOKENS), VOCAB.encode(BEAT_TYPE_TOKENS)
TIME_ID, MEASURE_ID = VOCAB.token_to_id[TIME], VOCAB.token_to_id["measure"]


def header_targets(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, T] label ids -> (key class [B], time class [B], has_header [B] bool): what `HeaderHead` must
    answer for each row whose first measure names a key (a system's start, or a printed key change).
    The time class is 0 when that measure prints no time signature."""
    keys, times, has = [], [], []
    for row in tokens.tolist():
        first: list[int] = []
        for token in row[1:]:
            if token == MEASURE_ID and first:
                break
            first.append(token)
        key = next((KEY_IDS.index(t) for t in first if t in KEY_IDS), None)
        time = 0
        if TIME_ID in first:
            at = first.index(TIME_ID)
            beats, beat_type = (first[at + 1:at + 3] + [-1, -1])[:2]
            if beats in BEATS_IDS and beat_type in BEAT_TYPE_IDS:
                time = 1 + BEATS_IDS.index(beats) * len(BEAT_TYPE_IDS) + BEAT_TYPE_IDS.index(beat_type)
        keys.append(key or 0)
        times.append(time)
        has.append(key is not None)
    device = tokens.device
    return (torch.tensor(keys, device=device), torch.tensor(times, device=device),
            torch.tensor(has, dtype=torch.bool, device=device))


def header_token_ids(key_class: int, time_class: int) -> tuple[int, list[int]]:
    """A `HeaderHead` answer as LMX ids: (the key token, the time signature's tokens or [])."""
    if time_class <= 0:
        return KEY_IDS[key_class], []
    beats, beat_type = divmod(time_class - 1, len(BEAT_TYPE_IDS))
    return KEY_IDS[key_class], [TIME_ID, BEATS_IDS[beats], BEAT_TYPE_IDS[beat_type]]


# ---------------------------------------------------------------------------
# the whole model


class OMRModel(nn.Module):
    """System image -> LMX token logits."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = ViTEncoder(cfg)
        self.decoder = LMXDecoder(cfg)
        self.header = HeaderHead(cfg) if cfg.header_head else None
        self.apply(self._init_weights)
        if self.decoder.pointer is not None:
            self.decoder.pointer.reset_parameters()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, nn.Conv2d):
            if module.kernel_size == (3, 3):  # conv stem, followed by GELU
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            else:  # linear patch embedding / 1x1 projection: init like a linear layer (as MAE does)
                nn.init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))
            nn.init.zeros_(module.bias)

    def encode(self, images: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(images, widths)

    def forward(self, images, widths, tokens_in, input_embeds=None) -> torch.Tensor:
        """Teacher-forced logits [B,T,V] for tokens_in [B,T] (starting with <bos>)."""
        memory, valid = self.encoder(images, widths)
        return self.decoder(tokens_in, memory, valid, input_embeds=input_embeds)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
