"""Weight files: fp16 round trip, clear errors for missing/corrupt/mismatched weights,
and the `acai-omr transcribe` command on real lieder-dev system images."""

import json
import shutil
import subprocess
import sys

import pytest
import torch

from acai_omr.cli import main as cli_main
from acai_omr.config import ModelConfig
from acai_omr.lmx.musicxml import find_piano_part, parse_score_string
from acai_omr.model.model import OMRModel
from acai_omr.model.weights import WeightsError, load_model, save_weights
from acai_omr.paths import shared_dir


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig.tiny()
    model = OMRModel(cfg).eval()
    save_weights(model, cfg, tmp_path / "weights")
    return model, cfg, tmp_path / "weights"


def test_round_trip_is_fp16_exact(saved):
    model, cfg, directory = saved
    assert (directory / "model.safetensors").is_file()
    assert json.loads((directory / "config.json").read_text()) == cfg.to_dict()
    loaded, loaded_cfg = load_model(directory)
    assert loaded_cfg == cfg and not loaded.training
    for (name, original), (_, restored) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert restored.dtype == torch.float32
        assert torch.equal(original.half().float(), restored), name
    images, widths = torch.rand(1, 1, 32, 64), torch.tensor([64])
    tokens = torch.tensor([[1, 3, 100, 150]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(images, widths, tokens), model(images, widths, tokens),
                                   rtol=0.05, atol=0.05)


def test_file_is_half_precision(saved):
    from safetensors import safe_open

    _, _, directory = saved
    with safe_open(str(directory / "model.safetensors"), "pt") as handle:
        assert {handle.get_tensor(key).dtype for key in handle.keys()} == {torch.float16}


def test_missing_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(WeightsError, match="does not exist.*acai-omr train supervised"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="no model.safetensors"):
        load_model(tmp_path / "empty")


def test_corrupt_weights_file(saved):
    _, _, directory = saved
    (directory / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(WeightsError, match="corrupt"):
        load_model(directory)


def test_lfs_pointer_is_recognised(saved):
    _, _, directory = saved
    (directory / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\n")
    with pytest.raises(WeightsError, match="git lfs pull"):
        load_model(directory)


def test_config_mismatch_and_bad_config(saved):
    _, cfg, directory = saved
    (directory / "config.json").write_text(json.dumps({**cfg.to_dict(), "dec_depth": 3}))
    with pytest.raises(WeightsError, match="does not match.*missing: decoder.blocks.2"):
        load_model(directory)
    (directory / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match="not a valid model config"):
        load_model(directory)
    (directory / "config.json").unlink()
    with pytest.raises(WeightsError, match="no config.json"):
        load_model(directory)


LIEDER = shared_dir() / "conformance" / "lieder-dev"
needs_lieder = pytest.mark.skipif(not LIEDER.is_dir(), reason="shared lieder-dev conformance set not present")


@needs_lieder
def test_transcribe_cli_writes_valid_musicxml_and_lmx(saved, tmp_path, capsys):
    _, _, directory = saved
    images = sorted(LIEDER.glob("*.png"))[:2]
    out = tmp_path / "out"
    code = cli_main(["transcribe", *map(str, images), "--system", "--weights", str(directory), "-o", str(out),
                     "--max-len", "40"])
    assert code == 0
    for image in images:
        score = parse_score_string((out / f"{image.stem}.musicxml").read_text())
        part = find_piano_part(score)
        assert part.findall("measure")  # grammar-constrained: at least one well-formed measure
    code = cli_main(["transcribe", str(images[0]), "--system", "--weights", str(directory), "-o", str(out),
                     "--format", "lmx", "--beam", "2", "--max-len", "30"])
    assert code == 0
    tokens = (out / f"{images[0].stem}.lmx").read_text().split()
    assert tokens[0] == "measure" and len(tokens) <= 29


@needs_lieder
def test_transcribe_bad_image_fails_alone(saved, tmp_path, capsys):
    _, _, directory = saved
    good = sorted(LIEDER.glob("*.png"))[0]
    bad = tmp_path / "broken.png"
    bad.write_text("this is not an image")
    out = tmp_path / "out"
    code = cli_main(["transcribe", str(bad), str(tmp_path / "missing.png"), str(good), "--system",
                     "--weights", str(directory), "-o", str(out), "--max-len", "20"])
    captured = capsys.readouterr()
    err = captured.err
    assert code == 1
    assert "broken.png: not a readable image" in err and "missing.png: no such file" in err
    assert "2 failed:" in err
    assert "1 of 3 input(s) transcribed (1 systems)" in captured.out
    assert (out / f"{good.stem}.musicxml").is_file()


def test_transcribe_without_weights_is_a_clear_error(tmp_path):
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("L", (300, 60), 255).save(image)
    result = subprocess.run([sys.executable, "-m", "acai_omr.cli", "transcribe", str(image), "--system",
                             "--weights", str(tmp_path / "no-weights")], capture_output=True, text=True)
    assert result.returncode == 1
    assert "does not exist" in result.stderr and "acai-omr train supervised" in result.stderr
    assert "Traceback" not in result.stderr


def test_prepare_image_keeps_aspect_and_pads_white():
    from PIL import Image

    from acai_omr.inference.transcribe import prepare_image

    cfg = ModelConfig.tiny()
    image = Image.new("RGB", (200, 100), (0, 0, 0))
    tensor, width = prepare_image(image, cfg)
    assert width == 64 and tensor.shape == (1, 32, 64) and float(tensor.max()) == 0.0
    very_wide = Image.new("L", (2000, 100), 0)
    tensor, width = prepare_image(very_wide, cfg)  # 640 px at height 32 > max 256: shrink, pad above/below
    assert width == 256 and tensor.shape == (1, 32, 256)
    assert float(tensor[0, 0].min()) == 1.0 and float(tensor[0, 16].max()) == 0.0


def test_inference_sees_exactly_the_pixels_training_sees():
    """The product resizes with the training path's own function (cv2 area averaging), not another
    resampler, so training, evaluation and the product decode the same pixels."""
    import numpy as np
    from PIL import Image

    from acai_omr.data.preprocess import fit_height, to_tensor
    from acai_omr.inference.transcribe import prepare_image

    cfg = ModelConfig.tiny()
    gray = np.random.default_rng(0).integers(0, 256, (90, 170), dtype=np.uint8)
    tensor, width = prepare_image(Image.fromarray(gray), cfg)
    training = to_tensor(fit_height(gray, cfg.image_height, cfg.max_image_width))
    assert width == training.shape[-1]
    assert torch.equal(tensor[:, :, :width], training)
    assert float(tensor[:, :, width:].min()) == 1.0  # patch padding is white paper


def test_int8_loading_quantizes_linear_layers_and_keeps_the_logits_close(saved):
    model, cfg, directory = saved
    fp32, _ = load_model(directory)
    int8, int8_cfg = load_model(directory, int8=True)
    assert int8_cfg == cfg and int8.cfg == cfg
    kinds = {type(m).__module__ for m in int8.modules() if "Linear" in type(m).__name__}
    assert kinds and all("quantized" in kind for kind in kinds)  # every Linear became a dynamic int8 one
    torch.manual_seed(1)
    images = torch.rand(2, 1, cfg.image_height, 4 * cfg.patch_width)
    widths = torch.tensor([4 * cfg.patch_width, 3 * cfg.patch_width])
    tokens = torch.randint(3, cfg.vocab_size, (2, 6))
    with torch.no_grad():
        reference, quantized = fp32(images, widths, tokens), int8(images, widths, tokens)
    scale = reference.abs().max()
    assert (reference - quantized).abs().max() < 0.1 * scale


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile (Inductor) needs a C++ compiler")
def test_compiled_decoder_decodes_the_same_tokens_as_eager(saved):
    from acai_omr.inference.decode import compile_decoder, greedy_decode

    _, cfg, directory = saved
    eager, _ = load_model(directory)
    compiled = compile_decoder(load_model(directory)[0])
    assert type(compiled.decoder).__name__ == "OptimizedModule", "compiling fell back to eager"
    torch.manual_seed(2)
    images = torch.rand(3, 1, cfg.image_height, 5 * cfg.patch_width)  # a batch size the warm-up did not use
    widths = torch.tensor([5, 4, 2]) * cfg.patch_width
    with torch.inference_mode():
        expected = greedy_decode(eager, images, widths, max_len=12)
        got = greedy_decode(compiled, images, widths, max_len=12)
    assert [r.token_ids for r in got] == [r.token_ids for r in expected]
    assert [r.logprob for r in got] == pytest.approx([r.logprob for r in expected], abs=1e-3)
