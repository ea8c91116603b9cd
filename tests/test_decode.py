"""Decoding: the KV cache matches full recomputation, beam 1 is greedy, sampling is consistent,
and grammar-constrained decoding always yields well-formed LMX."""

import pytest
import torch
from drawn import drawn_system

from acai_omr.lmx.delinearize import delinearize
from acai_omr.lmx.vocab import VOCAB
from acai_omr.inference.decode import PITCH_MASK, beam_search, greedy_decode, pitch_grouped_argmax, sample
from acai_omr.config import ModelConfig
from acai_omr.model.model import OMRModel


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "pitch-pointer"])
def model(request):
    """The tiny model, and the same with a PitchPointer whose query and gate are not at their
    starting values (so the cache has a pointer that really points to keep in step)."""
    torch.manual_seed(0)
    model = OMRModel(ModelConfig.from_dict({**ModelConfig.tiny().to_dict(), "pitch_pointer": request.param}))
    if request.param:
        with torch.no_grad():
            torch.nn.init.normal_(model.decoder.pointer.query.weight, std=0.5)
            model.decoder.pointer.gate.fill_(0.3)
    return model.eval()


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(1)
    images = torch.rand(3, 1, 32, 96)
    widths = torch.tensor([96, 50, 17])
    return images, widths


def teacher_forced_logprobs(model, images, widths, ids):
    """Log-probs of each generated token, recomputed without any cache."""
    tokens_in = torch.cat([torch.full((ids.shape[0], 1), VOCAB.bos_id), ids[:, :-1]], dim=1)
    with torch.no_grad():
        logits = model(images, widths, tokens_in)
    return logits, torch.log_softmax(logits, -1).gather(2, ids[:, :, None]).squeeze(2)


def test_cached_greedy_matches_uncached_recomputation(model, batch):
    images, widths = batch
    results = greedy_decode(model, images, widths, max_len=40)
    assert not any(r.finished for r in results)  # random weights: no <eos>, so 40 full steps each
    ids = torch.tensor([r.token_ids for r in results])
    logits, logp = teacher_forced_logprobs(model, images, widths, ids)
    masked = logits.clone()
    masked[:, :, [VOCAB.pad_id, VOCAB.bos_id]] = float("-inf")
    assert torch.equal(masked.argmax(-1), ids)  # same tokens without the cache
    masked_logp = torch.log_softmax(masked, -1).gather(2, ids[:, :, None]).squeeze(2)
    for row, result in enumerate(results):
        assert result.logprob == pytest.approx(float(masked_logp[row].sum()), abs=1e-4)


def test_cache_logits_match_full_forward_step_by_step(model, batch):
    images, widths = batch
    ids = torch.randint(3, len(VOCAB), (3, 20), generator=torch.Generator().manual_seed(5))
    full_logits, _ = teacher_forced_logprobs(model, images, widths, ids)
    with torch.no_grad():
        memory, valid = model.encode(images, widths)
        cache = model.decoder.new_cache(memory, valid, 32)
        tokens_in = torch.cat([torch.full((3, 1), VOCAB.bos_id), ids[:, :-1]], dim=1)
        prefill = model.decoder(tokens_in[:, :7], None, None, cache=cache)  # several positions at once
        steps = [model.decoder(tokens_in[:, t:t + 1], None, None, cache=cache) for t in range(7, 20)]
    cached = torch.cat([prefill] + steps, dim=1)
    torch.testing.assert_close(cached, full_logits, rtol=1e-5, atol=1e-5)


def test_grouped_argmax_writes_a_note_when_the_pitches_together_outweigh_a_rest():
    """Three pitches at 0.2 each outweigh a rest at 0.3 (the note's best pitch is chosen); a rest at 0.7
    outweighs pitches at 0.1 each; without competition it is the plain argmax. The log-prob is the
    chosen token's own."""
    ids = VOCAB.token_to_id
    probs = torch.full((3, len(VOCAB.tokens)), 1e-6)
    probs[0, [ids["C4"], ids["E4"]]] = 0.2
    probs[0, ids["G4"]] = 0.21
    probs[0, ids["rest"]] = 0.3
    probs[1, [ids["C4"], ids["E4"], ids["G4"]]] = 0.1
    probs[1, ids["rest"]] = 0.7
    probs[2, ids["quarter"]] = 0.9
    logp = (probs / probs.sum(-1, keepdim=True)).log()
    token, token_logp = pitch_grouped_argmax(logp)
    assert [VOCAB.tokens[i] for i in token.tolist()] == ["G4", "rest", "quarter"]
    assert torch.equal(token_logp, logp.gather(1, token[:, None]).squeeze(1))
    assert logp[0].argmax() == ids["rest"]  # what a plain argmax would have written
    assert int(PITCH_MASK.sum()) == 70 and not PITCH_MASK[ids["rest"]]


def test_grouped_greedy_follows_the_grouped_choice_of_the_uncached_logits(model, batch):
    """Pitch-grouped greedy decoding through the KV cache picks, at every step, what pitch_grouped_argmax
    picks from a full recomputation; on random weights it is not the plain argmax's sequence."""
    images, widths = batch
    results = greedy_decode(model, images, widths, max_len=30, group_pitches=True)
    ids = torch.tensor([r.token_ids for r in results])
    logits, _ = teacher_forced_logprobs(model, images, widths, ids)
    logits[:, :, [VOCAB.pad_id, VOCAB.bos_id]] = float("-inf")
    chosen, _ = pitch_grouped_argmax(torch.log_softmax(logits, -1).flatten(0, 1))
    assert torch.equal(chosen.view_as(ids), ids)
    plain = greedy_decode(model, images, widths, max_len=30)
    assert [r.token_ids for r in plain] != [r.token_ids for r in results]


def test_product_decoding_groups_pitches_unless_asked_not_to(model, batch):
    from acai_omr.inference.batch import decode_prepared

    images, widths = batch
    prepared = [(images[i, :, :, : int(widths[i])], int(widths[i])) for i in range(3)]
    grouped = greedy_decode(model, images, widths, max_len=20, constrained=True, group_pitches=True)
    plain = greedy_decode(model, images, widths, max_len=20, constrained=True)
    # (an untrained model's notes run past any real measure: leave the runaway stop out of this comparison)
    assert ([r.token_ids for r in decode_prepared(model, prepared, max_len=20, stop_runaways=False)]
            == [r.token_ids for r in grouped])
    assert ([r.token_ids for r in decode_prepared(model, prepared, max_len=20, group_pitches=False, stop_runaways=False)]
            == [r.token_ids for r in plain])


def test_beam_size_one_is_greedy(model, batch):
    images, widths = batch
    for constrained in (False, True):
        greedy = greedy_decode(model, images, widths, max_len=30, constrained=constrained)
        beam = beam_search(model, images, widths, beam_size=1, max_len=30, constrained=constrained)
        for g, b in zip(greedy, beam):
            assert g.token_ids == b.token_ids
            assert g.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_beam_search_finds_at_least_greedy_score_per_token(model, batch):
    images, widths = batch
    greedy = greedy_decode(model, images, widths, max_len=25, constrained=True)
    beam = beam_search(model, images, widths, beam_size=4, max_len=25, constrained=True)
    for g, b in zip(greedy, beam):
        g_len, b_len = len(g.token_ids) + g.finished, len(b.token_ids) + b.finished
        assert b.logprob / b_len >= g.logprob / g_len - 1e-5


def test_decoding_restores_training_mode(batch):
    torch.manual_seed(0)
    model = OMRModel(ModelConfig.tiny()).train()
    images, widths = batch
    first = greedy_decode(model, images, widths, max_len=10)
    second = greedy_decode(model, images, widths, max_len=10)
    assert model.training
    assert [r.token_ids for r in first] == [r.token_ids for r in second]  # dropout was off


def test_sample_shapes_and_logprobs(model, batch):
    images, widths = batch
    torch.manual_seed(7)
    out = sample(model, images, widths, n_samples=4, max_len=15)
    assert out.token_ids.shape[0] == 12 and out.token_ids.shape[1] <= 15
    assert out.image_index.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert len({tuple(out.token_ids[i].tolist()) for i in range(4)}) > 1  # samples differ
    # the reported log-probs are the model's (temperature 1, no top-k, unconstrained)
    expanded_images = images.repeat_interleave(4, 0)
    expanded_widths = widths.repeat_interleave(4, 0)
    ids = out.token_ids.clone()
    _, recomputed = teacher_forced_logprobs(model, expanded_images, expanded_widths, ids.clamp(min=3))
    logits, _ = teacher_forced_logprobs(model, expanded_images, expanded_widths, ids.clamp(min=3))
    logits[:, :, [VOCAB.pad_id, VOCAB.bos_id]] = float("-inf")
    recomputed = torch.log_softmax(logits, -1).gather(2, ids.clamp(min=0)[:, :, None]).squeeze(2)
    valid = torch.arange(ids.shape[1])[None, :] < out.lengths[:, None]
    torch.testing.assert_close(out.logprobs[valid], recomputed[valid], rtol=1e-4, atol=1e-4)
    assert (out.logprobs[~valid] == 0).all() and (out.token_ids[~valid] == VOCAB.pad_id).all()


def test_sample_top_k_one_is_greedy(model, batch):
    images, widths = batch
    out = sample(model, images, widths, n_samples=2, top_k=1, max_len=12)
    greedy = greedy_decode(model, images, widths, max_len=12)
    for row in range(6):
        assert out.sequence(row) == greedy[row // 2].token_ids


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_constrained_decoding_is_always_well_formed(seed):
    """Random weights, every decoding method: the LMX parses with no errors and ends with <eos>."""
    torch.manual_seed(seed)
    model = OMRModel(ModelConfig.tiny()).eval()
    images, widths = torch.rand(2, 1, 32, 64), torch.tensor([64, 33])
    outputs = [r.tokens for r in greedy_decode(model, images, widths, max_len=40, constrained=True)]
    outputs += [r.tokens for r in beam_search(model, images, widths, beam_size=3, max_len=40, constrained=True)]
    drawn = sample(model, images, widths, n_samples=4, temperature=2.0, max_len=40, constrained=True)
    assert drawn.finished.all()
    outputs += [VOCAB.decode(drawn.sequence(row)) for row in range(8)]
    for tokens in outputs:
        assert tokens and tokens[0] == "measure"
        result = delinearize(tokens)
        assert not result.unparseable
        assert result.errors == [], (tokens, result.errors)


def test_unconstrained_random_model_can_be_malformed(model, batch):
    """Control for the test above: without the grammar a random model does not start with `measure`."""
    images, widths = batch
    outputs = greedy_decode(model, images, widths, max_len=20)
    assert any(delinearize(r.tokens).unparseable or delinearize(r.tokens).errors for r in outputs)


def test_max_len_is_respected_and_validated(model, batch):
    images, widths = batch
    for result in greedy_decode(model, images, widths, max_len=5):
        assert len(result.token_ids) <= 5
    with pytest.raises(ValueError, match="max_len"):
        greedy_decode(model, images, widths, max_len=64)  # 63 generated + <bos> is the limit


def test_a_system_read_in_pieces_is_its_pieces_decoded_alone_and_joined(model, batch):
    """decode_systems batches every piece of every system together, yet each system's tokens are its
    pieces' own greedy tokens, left to right; progress reports a system once, when its last piece is done."""
    from acai_omr.inference.batch import decode_systems

    images, widths = batch
    pieces = [(images[i], int(widths[i])) for i in range(3)]  # [1, H, W] with its valid width
    alone = [greedy_decode(model, images[i:i + 1], widths[i:i + 1], max_len=12, constrained=False,
                           group_pitches=True)[0] for i in range(3)]
    reported = {}
    joined = decode_systems(model, [[pieces[2], pieces[0]], [pieces[1]]], batch_size=2, max_len=12,
                            constrained=False, on_batch=lambda ids, rs: reported.update(zip(ids, rs)))
    assert joined[0].token_ids == alone[2].token_ids + alone[0].token_ids
    assert joined[1].token_ids == alone[1].token_ids
    assert joined[0].logprob == pytest.approx(alone[2].logprob + alone[0].logprob, abs=1e-4)
    assert joined[0].finished == (alone[2].finished and alone[0].finished)
    assert sorted(reported) == [0, 1] and reported[0].token_ids == joined[0].token_ids


def test_decode_crops_reads_a_measure_reader_s_systems_measure_by_measure(model):
    """With read_measures set (the weights' default, or the caller's), a crop with two measures is read as
    two pieces and its tokens are the two pieces' tokens; 0 reads it whole."""
    from PIL import Image

    from acai_omr.inference.batch import decode_crops, decode_systems, system_pieces

    crop = Image.fromarray(drawn_system(stem_through_both=False))  # barlines at x = 10, 200, 390
    pieces = system_pieces(crop, model.cfg, 1)
    assert len(pieces) == 2 and len(system_pieces(crop, model.cfg, 0)) == 1
    by_measure = decode_crops(model, [crop], read_measures=1, max_len=8, constrained=False)[0]
    assert by_measure.token_ids == decode_systems(model, [pieces], max_len=8, constrained=False)[0].token_ids
    assert len(by_measure.token_ids) == 16  # random weights never stop: 8 per piece
    assert len(decode_crops(model, [crop], read_measures=0, max_len=8, constrained=False)[0].token_ids) == 8


def test_eval_samples_carry_the_pieces_a_measure_reader_decodes():
    """`acai-omr eval model` scores what the product would output: with read_measures the dev system is
    decoded in the same pieces (cut on the image the model sees, degraded or not)."""
    from acai_omr.inference.evaluate import EvalSample, _prepare

    image = drawn_system(stem_through_both=False)
    whole, pieces = _prepare(image, 32, 256, False, 0, 0, read_measures=1)
    assert pieces is not None and len(pieces) == 2 and all(p.shape[-2] == 32 for p in pieces)
    assert sum(p.shape[-1] for p in pieces) > whole.shape[-1]  # the pieces overlap by their margins
    sample = EvalSample("x", whole, [], "", None, pieces)
    assert [w for _, w in sample.model_inputs()] == [p.shape[-1] for p in pieces]
    assert _prepare(image, 32, 256, False, 0, 0, read_measures=0)[1] is None
