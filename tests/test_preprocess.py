"""One preprocessing path: training, evaluation and the product turn a system image into the same tensor."""

import numpy as np
import torch
from PIL import Image

from acai_omr.config import ModelConfig
from acai_omr.data.dataset import SystemDataset
from acai_omr.data.preprocess import reading_pieces, system_input
from acai_omr.inference.batch import system_pieces
from acai_omr.inference.evaluate import load_rendered_split
from acai_omr.inference.transcribe import prepare_image
from drawn import drawn_system
from test_data_measures import TWO_MEASURES
from test_dataset import write_split


def test_training_evaluation_and_product_paths_give_the_same_tensor(tmp_path):
    cfg = ModelConfig(image_height=48, max_image_width=512)
    gray = drawn_system()
    gray[30:50, 60:70] = 90  # some grey ink, so rounding differences would show
    write_split(tmp_path, "train", [("sys", gray, TWO_MEASURES)])

    training = SystemDataset(tmp_path, "train", height=cfg.image_height, augment=False, seed=0, max_tokens=None,
                             max_width=cfg.max_image_width)[0]["image"]
    evaluation = load_rendered_split(tmp_path, "train", cfg.image_height, cfg.max_image_width)[0].image
    png = Image.open(tmp_path / "train" / "shards" / "00000" / "sys.png")
    product, width = prepare_image(png, cfg)  # `acai-omr transcribe` and the web jobs
    (piece, piece_width), = system_pieces(png, cfg, read_measures=0)

    assert training.shape == (1, 48, 120)
    assert torch.equal(training, evaluation)
    assert width == 120 and torch.equal(product[:, :, :width], training)
    assert piece_width == 120 and torch.equal(piece, training)
    assert torch.equal(training, system_input(gray, cfg.image_height, cfg.max_image_width))


def test_measure_pieces_are_the_same_for_evaluation_and_product(tmp_path):
    cfg = ModelConfig(image_height=48, max_image_width=512, read_measures=1)
    gray = drawn_system()
    write_split(tmp_path, "train", [("sys", gray, TWO_MEASURES)])
    evaluation = load_rendered_split(tmp_path, "train", cfg.image_height, cfg.max_image_width,
                                     read_measures=1)[0].pieces
    product = system_pieces(Image.fromarray(gray), cfg, read_measures=1)
    assert len(evaluation) == len(product) == 2  # cut at the middle barline
    for evaluated, (piece, width) in zip(evaluation, product):
        assert torch.equal(evaluated, piece) and width == piece.shape[-1]
    assert [p.shape[-1] for p in reading_pieces(gray, 48, 512, 1)] == [p.shape[-1] for p in evaluation]


def test_transparent_pixels_are_paper_on_every_path(tmp_path):
    rgba = np.zeros((40, 80, 4), np.uint8)  # fully transparent black
    rgba[10:30, 20:30] = (0, 0, 0, 255)  # one opaque black block
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    cfg = ModelConfig(image_height=40, max_image_width=512)
    from acai_omr.data.preprocess import load_gray

    from_file = system_input(load_gray(tmp_path / "a.png"), 40, 512)
    product, width = prepare_image(Image.open(tmp_path / "a.png"), cfg)
    assert torch.equal(product[:, :, :width], from_file)
    assert float(from_file[0, 0, 0]) == 1.0 and float(from_file[0, 20, 25]) == 0.0
