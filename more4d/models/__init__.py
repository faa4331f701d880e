"""more4d models: motion VAE, STraG transformer (Wan + MPM/MAdaNorm), MPM feature extractors, text encoders."""

from more4d.models.motion_features import OmniMAEViT, TinyMotionEncoder
from more4d.models.motion_vae import MotionVAE, wan_decode, wan_encode
from more4d.models.strag_transformer import MotionPerceptionModule, STraGTransformer, widen_patch_embedding
from more4d.models.text_encoder import TinyTextEncoder, build_word_tokenizer, encode_prompt, load_umt5

__all__ = ["MotionPerceptionModule", "MotionVAE", "OmniMAEViT", "STraGTransformer", "TinyMotionEncoder",
           "TinyTextEncoder", "build_word_tokenizer", "encode_prompt", "load_umt5", "wan_decode", "wan_encode",
           "widen_patch_embedding"]
