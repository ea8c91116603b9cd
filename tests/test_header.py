"""The header head: key and time signature read from a system's left end and written by greedy decoding."""

import dataclasses

import pytest
import torch

from acai_omr.config import ModelConfig, SupervisedTrainConfig
from acai_omr.inference.decode import HeaderReader, greedy_decode
from acai_omr.lmx.vocab import VOCAB
from acai_omr.model.model import HeaderHead, OMRModel, header_targets, header_token_ids

CFG = ModelConfig(image_height=32, patch_height=16, patch_width=16, max_image_width=256, enc_dim=32, enc_depth=1,
                  enc_heads=2, dec_dim=32, dec_depth=1, dec_heads=2, max_tokens=64, header_head=True)


def ids(text: str) -> list[int]:
    return [VOCAB.bos_id, *VOCAB.encode(text), VOCAB.eos_id]


def test_targets_come_from_the_first_measure_only():
    rows = [ids("measure key:fifths:-4 time beats:3 beat-type:4 clef:G2 staff:1 C4 quarter staff:1"),
            ids("measure key:fifths:2 clef:G2 staff:1 measure time beats:2 beat-type:4 C4 quarter staff:1"),
            ids("measure C4 quarter staff:1 measure key:fifths:1 C4 quarter staff:1")]
    width = max(map(len, rows))
    tokens = torch.tensor([row + [VOCAB.pad_id] * (width - len(row)) for row in rows])
    key, time, has = header_targets(tokens)
    assert has.tolist() == [True, True, False]  # a crop that starts mid-system has no header to read
    assert key[:2].tolist() == [3, 9]  # fifths -4 and +2
    assert header_token_ids(int(key[0]), int(time[0])) == (
        VOCAB.token_to_id["key:fifths:-4"], VOCAB.encode("time beats:3 beat-type:4"))
    assert time[1] == 0  # the 2/4 is printed in the second measure, not in the header
    assert header_token_ids(int(key[1]), 0) == (VOCAB.token_to_id["key:fifths:2"], [])


def test_the_head_reads_only_the_left_end_of_the_memory():
    torch.manual_seed(0)
    head = HeaderHead(CFG).eval()
    rows, cols = CFG.image_height // CFG.patch_height, 10
    memory = torch.randn(1, rows * cols, CFG.enc_dim)
    valid = torch.ones(1, rows * cols, dtype=torch.bool)
    key, time = head(memory, valid)
    assert key.shape == (1, 15) and time.shape == (1, 65)
    changed = memory.clone().view(1, rows, cols, -1)
    changed[:, :, head.cols:] = torch.randn_like(changed[:, :, head.cols:])  # the music right of the header
    key2, time2 = head(changed.view(1, rows * cols, -1), valid)
    assert torch.allclose(key, key2) and torch.allclose(time, time2)
    changed[:, :, 0] += 1.0  # the header itself
    assert not torch.allclose(key, head(changed.view(1, rows * cols, -1), valid)[0])


def _logp_preferring(token: str) -> torch.Tensor:
    logp = torch.full((1, len(VOCAB)), -5.0)
    logp[0, VOCAB.token_to_id[token]] = -0.1
    return logp


def test_reader_replaces_the_decoders_key_and_adds_the_time_signature():
    """A synthetic decode where the answer is known: the decoder guesses key:fifths:0 and no time
    signature; the head reads three flats in 3/4. A later key change stays the decoder's."""
    time_class = 1 + (3 - 1) * 4 + 1  # beats:3 (index 2) x beat-type:4 (index 1)
    reader = HeaderReader(keys=[4], times=[time_class])  # class 4 = fifths -3
    decoder_says = ["measure", "key:fifths:0", "clef:G2", "clef:G2", "clef:G2", "staff:1", "measure",
                    "key:fifths:1"]
    written = []
    finished = torch.tensor([False])
    for guess in decoder_says:
        token = torch.tensor([VOCAB.token_to_id[guess]])
        token, _ = reader.apply(token, torch.tensor([-0.1]), torch.zeros(1, len(VOCAB)), finished)
        written.append(VOCAB.tokens[int(token)])
    assert written == ["measure", "key:fifths:-3", "time", "beats:3", "beat-type:4", "staff:1", "measure",
                       "key:fifths:1"]


def test_reader_leaves_a_forbidden_replacement_to_the_decoder():
    reader = HeaderReader(keys=[4], times=[0])
    logp = torch.zeros(1, len(VOCAB))
    logp[0, VOCAB.token_to_id["key:fifths:-3"]] = float("-inf")  # the grammar forbids it here
    token, _ = reader.apply(torch.tensor([VOCAB.token_to_id["key:fifths:0"]]), torch.tensor([-0.1]), logp,
                            torch.tensor([False]))
    assert VOCAB.tokens[int(token)] == "key:fifths:0"


def test_greedy_decoding_writes_the_heads_key_and_time_where_the_decoder_opens_with_a_key():
    torch.manual_seed(3)
    model = OMRModel(CFG).eval()
    key0 = VOCAB.token_to_id["key:fifths:0"]
    with torch.no_grad():
        # a decoder that writes key:fifths:0 wherever the grammar lets it (its final norm outputs that token's
        # embedding direction), and a head that reads five sharps in 6/8
        embedding = model.decoder.token_embedding.weight
        model.decoder.norm.weight.zero_()
        model.decoder.norm.bias.copy_(20.0 * embedding[key0] / embedding[key0].norm() ** 2)
        model.header.key.bias.zero_()
        model.header.key.bias[12] = 50.0
        model.header.time.bias.zero_()
        model.header.time.bias[1 + (6 - 1) * 4 + 2] = 50.0  # beats:6 x beat-type:8
    images, widths = torch.rand(3, 1, 32, 64), torch.tensor([64, 48, 32])
    plain = greedy_decode(model, images, widths, max_len=8, constrained=True)
    read = greedy_decode(model, images, widths, max_len=8, constrained=True, read_header=True)
    for before, after in zip(plain, read):
        assert before.tokens[:3] == ["measure", "key:fifths:0", "key:fifths:0"]
        assert after.tokens[:6] == ["measure", "key:fifths:5", "time", "beats:6", "beat-type:8", "key:fifths:0"]


def test_a_run_with_the_header_loss_adds_the_head_to_weights_trained_without_it(tmp_path):
    from acai_omr.model.weights import load_model, save_weights
    from acai_omr.train.supervised import SupervisedObjective, load_weights_into, run_model_config

    plain = dataclasses.replace(CFG, header_head=False)
    folder = save_weights(OMRModel(plain), plain, tmp_path / "weights")
    cfg = run_model_config(SupervisedTrainConfig(init_weights=str(folder), aux_header=0.5))
    assert cfg.header_head
    model = OMRModel(cfg)
    load_weights_into(model, str(folder), cfg)
    trained, _ = load_model(folder)
    assert torch.equal(model.decoder.token_embedding.weight, trained.decoder.token_embedding.weight.float())
    objective = SupervisedObjective(model, aux_header=0.5)
    tokens = torch.tensor([ids("measure key:fifths:-4 time beats:3 beat-type:4 clef:G2 staff:1")] * 2)
    loss, stats = objective(torch.rand(2, 1, 32, 64), torch.tensor([64, 64]), tokens)
    loss.backward()
    assert "key_acc" in stats and model.header.key.weight.grad.abs().sum() > 0
    saved, saved_cfg = load_model(save_weights(model, cfg, tmp_path / "with-head"))
    assert saved_cfg.header_head and saved.header is not None
    with pytest.raises(ValueError, match="header head"):
        SupervisedObjective(OMRModel(plain), aux_header=0.5)
