from .modules import Decoder_Fusion, Gaussian_Predictor, Generator, Label_Encoder, RGB_Encoder

__all__ = ["Generator", "RGB_Encoder", "Label_Encoder", "Gaussian_Predictor", "Decoder_Fusion"]
