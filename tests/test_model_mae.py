"""MAE pretraining head: masking picks only real patches and padding never enters the loss."""

import pytest
import torch

from acai_omr.config import ModelConfig
from acai_omr.model.mae import MaskedAutoencoder, patchify, unpatchify
from acai_omr.model.model import OMRModel


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


@pytest.fixture(params=["conv", "linear"])
def mae(request):
    torch.manual_seed(0)
    cfg = ModelConfig.from_dict({**ModelConfig.tiny().to_dict(), "stem": request.param})
    return MaskedAutoencoder(OMRModel(cfg).encoder, cfg)


def test_patchify_round_trip_and_order():
    images = torch.rand(2, 1, 32, 48)
    patches = patchify(images, 16, 8)
    assert patches.shape == (2, 2 * 6, 128)
    torch.testing.assert_close(patches[0, 7].view(16, 8), images[0, 0, 16:32, 8:16])  # row 1, column 1
    torch.testing.assert_close(unpatchify(patches, 16, 8, rows=2), images)


def test_masking_uses_valid_patches_only(mae):
    valid = torch.zeros(3, 40, dtype=torch.bool)
    valid[0, :40] = True
    valid[1, :12] = True
    valid[2, :3] = True
    for _ in range(20):
        keep_index, keep_valid, masked = mae.random_masking(valid, 0.75)
        assert keep_valid.sum(1).tolist() == [10, 3, 1]  # round(n_valid / 4), at least one
        kept_positions = [set(keep_index[b][keep_valid[b]].tolist()) for b in range(3)]
        for b in range(3):
            assert all(valid[b, i] for i in kept_positions[b])  # padding is never visible
            assert not any(masked[b, i] for i in kept_positions[b])
        assert not (masked & ~valid).any()  # padding is never a reconstruction target
        assert (masked.sum(1) + keep_valid.sum(1) == valid.sum(1)).all()


def test_loss_ignores_padding(mae):
    """Changing the padding (input and target) leaves the loss, prediction and mask unchanged."""
    torch.manual_seed(1)
    degraded, clean = torch.rand(2, 1, 32, 64), torch.rand(2, 1, 32, 64)
    widths = torch.tensor([64, 21])
    degraded2, clean2 = degraded.clone(), clean.clone()
    degraded2[1, :, :, 21:] = torch.rand(1, 32, 43)
    clean2[1, :, :, 21:] = 0.0
    mae.eval()
    torch.manual_seed(5)
    loss_a, pred_a, mask_a = mae(degraded, clean, widths)
    torch.manual_seed(5)
    loss_b, pred_b, mask_b = mae(degraded2, clean2, widths)
    assert torch.equal(mask_a, mask_b)
    torch.testing.assert_close(loss_a, loss_b)
    assert mask_a[1].view(2, 8)[:, 3:].sum() == 0  # columns beyond 21 px (3 columns of 8 px) never masked


def test_hidden_patches_cannot_leak_into_the_prediction(mae):
    """With the same mask, changing the input pixels of hidden patches changes nothing: the conv
    stem's receptive field crosses patch borders, so hidden patches are blanked before embedding."""
    torch.manual_seed(4)
    degraded, clean = torch.rand(1, 1, 32, 64), torch.rand(1, 1, 32, 64)
    widths = torch.tensor([64])
    mae.eval()
    torch.manual_seed(7)
    _, pred_a, mask = mae(degraded, clean, widths)
    hidden = unpatchify(mask[:, :, None].expand(-1, -1, 16 * 8), 16, 8, rows=2).bool()
    altered = torch.where(hidden, torch.rand_like(degraded), degraded)
    assert not torch.equal(altered, degraded)
    torch.manual_seed(7)
    _, pred_b, mask_b = mae(altered, clean, widths)
    assert torch.equal(mask, mask_b)
    torch.testing.assert_close(pred_a, pred_b)


def test_target_is_the_clean_image(mae):
    """Feed degraded, reconstruct clean: the loss depends on the clean image's hidden patches."""
    torch.manual_seed(2)
    degraded, clean = torch.rand(1, 1, 32, 64), torch.rand(1, 1, 32, 64)
    widths = torch.tensor([64])
    mae.eval()
    torch.manual_seed(9)
    loss_a, _, mask = mae(degraded, clean, widths)
    hidden = mask[0].bool()
    other_clean = unpatchify(torch.where(hidden[None, :, None], torch.rand(1, 16, 128), patchify(clean, 16, 8)),
                             16, 8, rows=2)
    torch.manual_seed(9)
    loss_b, _, _ = mae(degraded, other_clean, widths)
    assert not torch.allclose(loss_a, loss_b)
    visible_changed = unpatchify(torch.where(hidden[None, :, None], patchify(clean, 16, 8), torch.rand(1, 16, 128)),
                                 16, 8, rows=2)
    torch.manual_seed(9)
    loss_c, _, _ = mae(degraded, visible_changed, widths)
    torch.testing.assert_close(loss_a, loss_c)  # visible clean patches are not in the loss


def test_training_reduces_loss_and_updates_shared_encoder(mae):
    torch.manual_seed(3)
    clean = torch.ones(2, 1, 32, 64)
    clean[:, :, 8:10, :] = 0.0  # a "staff line"
    clean[:, :, 20:22, :] = 0.0
    degraded = (clean + 0.1 * torch.randn_like(clean)).clamp(0, 1)
    widths = torch.tensor([64, 40])
    before = next(mae.encoder.patch_embed.parameters()).detach().clone()
    optimizer = torch.optim.AdamW(mae.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss, _, _ = mae(degraded, clean, widths, mask_ratio=0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert not torch.equal(before, next(mae.encoder.patch_embed.parameters()))


def test_bad_arguments(mae):
    images = torch.rand(1, 1, 32, 64)
    with pytest.raises(ValueError, match="mask_ratio"):
        mae(images, images, torch.tensor([64]), mask_ratio=1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        mae(images, torch.rand(1, 1, 32, 56), torch.tensor([56]))
