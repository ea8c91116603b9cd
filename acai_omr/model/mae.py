"""Masked-autoencoder pretraining of the ViT encoder on system images.

Following the MAE recipe (He et al. 2021): hide most patches, encode only the
visible ones, and let a light decoder reconstruct the hidden ones; the loss is
on the hidden patches, with each target patch normalised by its own mean and
variance. Three changes for OMR: the input is a degraded image and the target
is the clean rendering of the same system (so pretraining also learns to see
through scan/photo damage), and images of different widths share a batch, so
padding patches are never visible, never reconstructed and never in the loss;
and hidden patches are blanked in pixel space before the patch embedding, so an
encoder with a convolutional stem cannot peek at them from a neighbour.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from acai_omr.config import ModelConfig
from acai_omr.model.model import EncoderBlock, ViTEncoder, key_padding_mask, sincos_2d


def patchify(images: torch.Tensor, patch_height: int, patch_width: int) -> torch.Tensor:
    """[B,1,H,W] -> [B, N, ph*pw], patches in row-major order (the encoder's order)."""
    B, C, H, W = images.shape
    rows, cols = H // patch_height, W // patch_width
    x = images.reshape(B, C, rows, patch_height, cols, patch_width)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, rows * cols, patch_height * patch_width * C)


def unpatchify(patches: torch.Tensor, patch_height: int, patch_width: int, rows: int) -> torch.Tensor:
    """[B, N, ph*pw] -> [B,1,H,W]; the inverse of patchify for an image of `rows` patch rows."""
    B, N, _ = patches.shape
    cols = N // rows
    x = patches.reshape(B, rows, cols, patch_height, patch_width, 1)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(B, 1, rows * patch_height, cols * patch_width)


class MaskedAutoencoder(nn.Module):
    """Wraps a ViTEncoder (shared with OMRModel) with a light reconstruction decoder."""

    def __init__(self, encoder: ViTEncoder, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.to_decoder = nn.Linear(cfg.enc_dim, cfg.mae_dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(cfg.mae_dec_dim))
        pos = sincos_2d(encoder.rows, encoder.max_cols, cfg.mae_dec_dim).view(encoder.rows, encoder.max_cols, -1)
        self.register_buffer("pos_embed", pos, persistent=False)
        self.blocks = nn.ModuleList(
            EncoderBlock(cfg.mae_dec_dim, cfg.mae_dec_heads, cfg.mlp_ratio, 0.0) for _ in range(cfg.mae_dec_depth)
        )
        self.norm = nn.LayerNorm(cfg.mae_dec_dim)
        self.head = nn.Linear(cfg.mae_dec_dim, cfg.patch_height * cfg.patch_width)
        nn.init.normal_(self.mask_token, std=0.02)
        for module in [self.to_decoder, self.head, *self.blocks.modules()]:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def random_masking(self, valid: torch.Tensor, mask_ratio: float):
        """Choose the visible patches among the valid ones, independently per image.

        Returns (keep_index [B,K], keep_valid [B,K], masked [B,N] bool). Image b
        keeps max(1, round(n_valid_b * (1 - mask_ratio))) random valid patches;
        K is the largest such count, and keep_valid marks which of the K slots
        are real for each image. masked = valid and not kept.
        """
        B, N = valid.shape
        n_valid = valid.sum(dim=1)
        n_keep = (n_valid.float() * (1.0 - mask_ratio)).round().long().clamp(min=1)
        noise = torch.rand(B, N, device=valid.device).masked_fill(~valid, 2.0)  # padding sorts last
        order = noise.argsort(dim=1)
        K = int(n_keep.max())
        keep_index = order[:, :K]
        keep_valid = torch.arange(K, device=valid.device)[None, :] < n_keep[:, None]
        kept = torch.zeros(B, N, dtype=torch.bool, device=valid.device)
        kept.scatter_(1, keep_index, keep_valid)
        return keep_index, keep_valid, valid & ~kept

    def forward_encoder(self, degraded: torch.Tensor, widths: torch.Tensor, mask_ratio: float):
        """Mask, then encode the visible patches only.

        -> (latent [B,K,enc_dim] of the kept patches, keep_index [B,K], keep_valid [B,K],
        valid [B,N] patches inside the image, masked [B,N] hidden valid patches).
        """
        ph, pw = self.cfg.patch_height, self.cfg.patch_width
        self.encoder.check_input(degraded, widths)
        valid = self.encoder.valid_patches(widths, degraded.shape[3] // pw)
        keep_index, keep_valid, masked = self.random_masking(valid, mask_ratio)
        # Hidden patches become blank paper before embedding: a conv stem's receptive field reaches
        # into neighbouring patches, and must not see the pixels it is asked to reconstruct.
        hidden_pixels = unpatchify(masked[:, :, None].float().expand(-1, -1, ph * pw), ph, pw, self.encoder.rows)
        degraded = torch.where(hidden_pixels.bool(), torch.ones((), dtype=degraded.dtype, device=degraded.device),
                               degraded)
        tokens, _ = self.encoder.embed_patches(degraded, widths)
        D = tokens.shape[2]
        visible = tokens.gather(1, keep_index[:, :, None].expand(-1, -1, D))
        latent = self.encoder.run_blocks(visible, keep_valid)
        return latent, keep_index, keep_valid, valid, masked

    def forward_decoder(self, latent: torch.Tensor, keep_index: torch.Tensor, keep_valid: torch.Tensor,
                        valid: torch.Tensor) -> torch.Tensor:
        """Every valid position gets its encoded patch or the mask token -> pred [B,N,ph*pw]."""
        B, N = valid.shape
        x = self.mask_token.expand(B, N, -1).clone()
        encoded = self.to_decoder(latent)
        rows = torch.arange(B, device=x.device)[:, None].expand_as(keep_index)
        x[rows[keep_valid], keep_index[keep_valid]] = encoded[keep_valid]
        cols = N // self.encoder.rows
        x = x + self.pos_embed[:, :cols].reshape(1, N, -1)
        attend = key_padding_mask(valid)
        for block in self.blocks:
            x = block(x, attend)
        return self.head(self.norm(x))

    def forward_loss(self, clean: torch.Tensor, widths: torch.Tensor, pred: torch.Tensor,
                     masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean squared error over hidden valid patches against the clean image's patches, each
        normalised by its own mean and variance (padding set to white) -> (loss, mask [B,N] float)."""
        inside = torch.arange(clean.shape[3], device=clean.device)[None, :] < widths[:, None]
        clean = torch.where(inside[:, None, None, :], clean, torch.ones((), dtype=clean.dtype, device=clean.device))
        target = patchify(clean, self.cfg.patch_height, self.cfg.patch_width)
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
        per_patch = ((pred - target) ** 2).mean(dim=-1)
        mask = masked.float()
        return (per_patch * mask).sum() / mask.sum().clamp(min=1.0), mask

    def forward(self, degraded: torch.Tensor, clean: torch.Tensor, widths: torch.Tensor, mask_ratio: float = 0.75):
        """-> (loss, pred [B,N,ph*pw] in normalised-patch units, mask [B,N] float: 1 = hidden valid patch).

        The loss is the mean squared error over hidden valid patches only.
        """
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        if degraded.shape != clean.shape:
            raise ValueError(f"degraded {list(degraded.shape)} and clean {list(clean.shape)} differ in shape")
        latent, keep_index, keep_valid, valid, masked = self.forward_encoder(degraded, widths, mask_ratio)
        pred = self.forward_decoder(latent, keep_index, keep_valid, valid)
        loss, mask = self.forward_loss(clean, widths, pred, masked)
        return loss, pred, mask
