"""The OMR network, with nothing but the network here (no training loop, no decoding loop).

- `model`: `OMRModel` = `ViTEncoder` + `LMXDecoder` (KV cache), and the `HeaderHead` that reads
  the key and time signature.
- `mae`: the masked-autoencoder head used to pretrain the encoder.
- `heads`: the encoder's auxiliary training read-outs (symbols, pixels, CTC, note map).
- `weights`: the fp16 safetensors weight files and their config.
"""

from acai_omr.model.model import DecoderCache, LMXDecoder, OMRModel, ViTEncoder

__all__ = ["DecoderCache", "LMXDecoder", "OMRModel", "ViTEncoder"]
