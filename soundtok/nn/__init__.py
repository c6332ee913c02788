"""Neural building blocks shared by tokenizer families (quantizers first)."""

from soundtok.nn.quantize import QuantizerOutput, ResidualVectorQuantizer, RVQConfig, VectorQuantizer, VQConfig

__all__ = ["QuantizerOutput", "RVQConfig", "ResidualVectorQuantizer", "VQConfig", "VectorQuantizer"]
