from soundtok.audio.io import convert_channels, load_audio, resample, save_audio

__all__ = ["convert_channels", "load_audio", "resample", "save_audio"]
