"""Fixtures shared by the test modules: a tiny random-init model saved as weights, and an engraved page.

The tiny model's transcriptions are nonsense, but every stage of the pipeline runs for real with it.
Plain helpers live beside this file: `web_client.py` (the Flask test client), `drawn.py` (a system
drawn with known barlines), `shared_data.py` (the shared corpora and conformance set).
"""

from __future__ import annotations

import io

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: extra intra-op threads only add overhead (and stall badly on a busy machine)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_model_config():
    from acai_omr.config import ModelConfig

    return ModelConfig(image_height=64, enc_dim=32, enc_depth=1, enc_heads=2, dec_dim=32, dec_depth=1, dec_heads=2,
                       mae_dec_dim=16, mae_dec_depth=1, mae_dec_heads=2, max_tokens=128)


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory):
    """A weights folder (model.safetensors + config.json) of the tiny model, seed 0."""
    import torch

    from acai_omr.model.model import OMRModel
    from acai_omr.model.weights import save_weights

    torch.manual_seed(0)
    cfg = tiny_model_config()
    return save_weights(OMRModel(cfg), cfg, tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="session")
def page_png() -> bytes:
    """An engraved page (Verovio, a Lieder training piece) as PNG bytes."""
    from acai_omr.data.pages import render_page
    from shared_data import CORPORA, require

    require(CORPORA)
    image, _ = render_page(seed=3, page=0, staff_space_px=10)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
