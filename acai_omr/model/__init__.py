"""The OMR network: ViT encoder, LMX decoder, masked-autoencoder pretraining head, weight files."""

from acai_omr.model.model import DecoderCache, LMXDecoder, OMRModel, ViTEncoder

__all__ = ["DecoderCache", "LMXDecoder", "OMRModel", "ViTEncoder"]
