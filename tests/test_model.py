"""The OMR network: encoder padding handling, decoder causality and tied embeddings, config presets."""

import pytest
import torch

from acai_omr.config import ModelConfig
from acai_omr.lmx.vocab import VOCAB
from acai_omr.model.model import OMRModel, sincos_2d


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def tiny_config(**overrides) -> ModelConfig:
    return ModelConfig.from_dict({**ModelConfig.tiny().to_dict(), **overrides})


@pytest.fixture(params=["conv", "linear"])
def model(request):
    torch.manual_seed(0)
    return OMRModel(tiny_config(stem=request.param)).eval()


def random_tokens(batch, length, seed=1):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(3, len(VOCAB), (batch, length), generator=generator)
    tokens[:, 0] = VOCAB.bos_id
    return tokens


def test_vocab_size_default_matches_vocabulary():
    assert ModelConfig().vocab_size == len(VOCAB) == 227


def test_config_dict_round_trip_and_unknown_field():
    cfg = ModelConfig.large()
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="not_a_field"):
        ModelConfig.from_dict({**cfg.to_dict(), "not_a_field": 1})


@pytest.mark.parametrize("preset", [ModelConfig.small, ModelConfig.large])
def test_presets_are_consistent(preset):
    cfg = preset()
    assert cfg.image_height % cfg.patch_height == 0 and cfg.max_image_width % cfg.patch_width == 0
    assert cfg.enc_dim % cfg.enc_heads == 0 and cfg.dec_dim % cfg.dec_heads == 0 and cfg.enc_dim % 4 == 0
    assert cfg.mae_dec_dim % 4 == 0


def test_encoder_shapes_and_valid_columns(model):
    images = torch.rand(2, 1, 32, 96)
    widths = torch.tensor([96, 20])  # 20 px -> 3 patch columns of 8 px (the last one partly filled)
    memory, valid = model.encode(images, widths)
    assert memory.shape == (2, 2 * 12, 32)
    assert valid[0].all()
    per_row = valid[1].view(2, 12)
    assert per_row[:, :3].all() and not per_row[:, 3:].any()


def test_padding_does_not_change_encoder_or_logits(model):
    """The same image padded to different widths (with garbage in the padding) gives the same outputs."""
    torch.manual_seed(3)
    image = torch.rand(1, 1, 32, 44)
    tokens = random_tokens(1, 12)
    narrow = torch.ones(1, 1, 32, 48)
    narrow[..., :44] = image
    wide = torch.rand(2, 1, 32, 160)  # padding full of noise; a second, wider image in the batch
    wide[0, :, :, :44] = image[0]
    widths_narrow, widths_wide = torch.tensor([44]), torch.tensor([44, 160])
    with torch.no_grad():
        mem_n, valid_n = model.encode(narrow, widths_narrow)
        mem_w, valid_w = model.encode(wide, widths_wide)
        cols_n, cols_w = 48 // 8, 160 // 8
        real_n = mem_n[0].view(2, cols_n, -1)[:, :6]
        real_w = mem_w[0].view(2, cols_w, -1)[:, :6]
        torch.testing.assert_close(real_n, real_w, rtol=1e-5, atol=1e-5)
        logits_n = model(narrow, widths_narrow, tokens)
        logits_w = model(wide, widths_wide, tokens.expand(2, -1))[:1]
    torch.testing.assert_close(logits_n, logits_w, rtol=1e-5, atol=1e-5)


def test_conv_stem_sees_the_image_and_rejects_odd_patch_sizes():
    """The conv stem's tokens depend on the ink (a blank image and a drawn one differ) and
    need power-of-two patches, since each layer halves the grid."""
    torch.manual_seed(0)
    model = OMRModel(tiny_config(stem="conv")).eval()
    blank, drawn = torch.ones(1, 1, 32, 64), torch.ones(1, 1, 32, 64)
    drawn[..., 10:12, :] = 0.0
    with torch.no_grad():
        assert not torch.allclose(model.encode(blank, torch.tensor([64]))[0], model.encode(drawn, torch.tensor([64]))[0])
    with pytest.raises(ValueError, match="power-of-two"):
        OMRModel(tiny_config(stem="conv", patch_width=12, max_image_width=252))
    with pytest.raises(ValueError, match="unknown stem"):
        OMRModel(tiny_config(stem="resnet"))


def test_configs_without_a_stem_field_load_as_linear_patches():
    """weights/config.json written before the conv stem existed must rebuild the same network."""
    legacy = {k: v for k, v in ModelConfig.tiny().to_dict().items() if k != "stem"}
    assert ModelConfig.from_dict(legacy).stem == "linear"
    assert ModelConfig.tiny().stem == "conv"


def test_any_width_up_to_the_maximum_and_no_further(model):
    with torch.no_grad():
        model.encode(torch.rand(1, 1, 32, 256), torch.tensor([256]))
        with pytest.raises(ValueError, match="at most 256"):
            model.encode(torch.rand(1, 1, 32, 264), torch.tensor([264]))
        with pytest.raises(ValueError, match=r"\[B, 1, 32, W\]"):
            model.encode(torch.rand(1, 1, 40, 64), torch.tensor([64]))


def test_sincos_positions_are_distinct():
    pos = sincos_2d(4, 50, 32)
    assert pos.shape == (200, 32)
    assert torch.cdist(pos, pos).add(torch.eye(200) * 10).min() > 1e-3


def test_decoder_is_causal(model):
    images, widths = torch.rand(1, 1, 32, 64), torch.tensor([64])
    tokens = random_tokens(1, 10)
    changed = tokens.clone()
    changed[0, 6] = (changed[0, 6] + 1 - 3) % (len(VOCAB) - 3) + 3
    with torch.no_grad():
        a, b = model(images, widths, tokens), model(images, widths, changed)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_input_embeds_path_and_tied_output(model):
    """Scheduled sampling feeds embeddings: token embeddings give the same logits as the token ids."""
    images, widths = torch.rand(2, 1, 32, 64), torch.tensor([64, 40])
    tokens = random_tokens(2, 9)
    with torch.no_grad():
        by_ids = model(images, widths, tokens)
        embeds = model.decoder.token_embedding(tokens)
        by_embeds = model(images, widths, tokens, input_embeds=embeds)
        # soft mixture (one-hot weights @ embedding matrix) is the same thing
        one_hot = torch.nn.functional.one_hot(tokens, len(VOCAB)).float()
        by_mixture = model(images, widths, tokens, input_embeds=one_hot @ model.decoder.token_embedding.weight)
    torch.testing.assert_close(by_ids, by_embeds)
    torch.testing.assert_close(by_ids, by_mixture, rtol=1e-5, atol=1e-5)
    assert by_ids.shape == (2, 9, len(VOCAB))
    # the output projection is the embedding matrix: no separate head parameter
    names = [name for name, _ in model.named_parameters()]
    assert not any("head" in name for name in names)


def test_gradients_reach_encoder_and_embedding():
    torch.manual_seed(0)
    model = OMRModel(tiny_config()).train()
    images, widths = torch.rand(2, 1, 32, 64), torch.tensor([64, 30])
    tokens = random_tokens(2, 9)
    logits = model(images, widths, tokens[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
    loss.backward()
    first_stem_weight = next(model.encoder.patch_embed.parameters())
    assert first_stem_weight.grad.abs().sum() > 0
    assert model.decoder.token_embedding.weight.grad.abs().sum() > 0


def test_too_many_tokens_raise(model):
    with pytest.raises(ValueError, match="max_tokens"):
        model(torch.rand(1, 1, 32, 64), torch.tensor([64]), random_tokens(1, 65))


def test_centred_memory_cannot_collapse_to_one_vector():
    """With center_memory, an encoder whose blocks output the same vector everywhere hands the decoder
    zeros (LayerNorm of nothing), never a constant that looks like content; without it, that constant
    passes through. Every earlier CPU run converged to the second case."""
    cfg = ModelConfig.tiny()
    cfg.dropout = 0.0
    images, widths = torch.rand(2, 1, cfg.image_height, 64), torch.tensor([64, 40])
    for centred in (True, False):
        cfg.center_memory = centred
        encoder = OMRModel(cfg).encoder.eval()
        with torch.no_grad():
            block = encoder.blocks[-1].mlp.proj
            block.bias.copy_(1e4 * torch.randn(block.bias.shape))  # a bias that swamps every patch's content
            memory, valid = encoder(images, widths)
        spread = memory[0][valid[0]].std(dim=0).mean().item()
        assert (spread > 0.3) if centred else (spread < 0.01), (centred, spread)


def test_configs_saved_before_centring_load_uncentred():
    legacy = {k: v for k, v in ModelConfig.small().to_dict().items() if k not in ("stem", "center_memory")}
    loaded = ModelConfig.from_dict(legacy)
    assert loaded.center_memory is False and loaded.stem == "linear"
    assert ModelConfig.small().center_memory is True


def test_the_pitch_pointer_names_the_pitch_the_map_holds_where_the_decoder_looks():
    """A known answer: patch 2 holds an E4, patch 5 a G4. A decoder state that points at patch 5 gets
    G4, one that points at patch 2 gets E4, from pitch logits that were flat; the pitch tokens' summed
    probability (whether a note comes) and every other token's logit are what the decoder said."""
    from acai_omr.lmx.vocab import PITCH_TOKENS
    from acai_omr.model.model import PitchPointer

    cfg = tiny_config(pitch_pointer=True)
    pointer = PitchPointer(cfg).eval()
    D, N = cfg.dec_dim, 6
    with torch.no_grad():
        pointer.query.weight.copy_(torch.eye(D) * 200.0)
        pointer.query.bias.zero_()
        pointer.gate.fill_(1.0)
    keys = torch.eye(D)[:N][None]  # patch n's key: the n-th unit vector
    pitches = torch.full((1, N, len(PITCH_TOKENS)), 1e-3)
    pitches[0, 2, PITCH_TOKENS.index("E4")] = 0.9
    pitches[0, 5, PITCH_TOKENS.index("G4")] = 0.9
    valid = torch.ones(1, N, dtype=torch.bool)
    h = torch.stack([torch.eye(D)[5], torch.eye(D)[2]])[None]  # step 0 looks at patch 5, step 1 at patch 2
    logits = torch.randn(1, 2, cfg.vocab_size)
    pitch_ids = VOCAB.encode(PITCH_TOKENS)
    logits[..., pitch_ids] = 0.0
    out = pointer(h, logits, (keys, pitches), valid)
    best = out[0][:, pitch_ids].argmax(-1)
    assert [PITCH_TOKENS[i] for i in best] == ["G4", "E4"]
    torch.testing.assert_close(out[..., pitch_ids].logsumexp(-1), logits[..., pitch_ids].logsumexp(-1))
    others = [i for i in range(cfg.vocab_size) if i not in pitch_ids]
    assert torch.equal(out[..., others], logits[..., others])
    # a padded patch is never read: hide patch 5 and the first step no longer finds its G4
    valid[0, 5] = False
    hidden = pointer(h, logits, (keys, pitches), valid)
    assert PITCH_TOKENS[int(hidden[0, 0, pitch_ids].argmax())] != "G4"


def test_a_pointer_at_gate_zero_is_the_model_it_was_added_to(tmp_path):
    """Weights trained without a pointer continue into a model with one; until its gate opens the
    new model's logits are the old model's, so a continued run starts where the weights were."""
    from acai_omr.model.weights import save_weights
    from acai_omr.train.supervised import load_weights_into

    cfg = tiny_config(dropout=0.0)
    torch.manual_seed(3)
    folder = save_weights(OMRModel(cfg), cfg, tmp_path / "weights")
    plain = OMRModel(cfg).eval()
    load_weights_into(plain, str(folder), cfg)
    with_pointer = tiny_config(dropout=0.0, pitch_pointer=True)
    model = OMRModel(with_pointer).eval()
    load_weights_into(model, str(folder), with_pointer)
    images, widths = torch.rand(2, 1, 32, 64), torch.tensor([64, 40])
    tokens = random_tokens(2, 12)
    with torch.no_grad():
        opened = model(images, widths, tokens)
        model.decoder.pointer.gate.zero_()
        closed = model(images, widths, tokens)
        reference = plain(images, widths, tokens)
    torch.testing.assert_close(closed, reference, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(opened, reference, atol=1e-3)  # at its starting gate the image has its say
