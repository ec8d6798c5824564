"""Model zoo: small reference networks used by tests, the demo and benchmarks."""
from .digits import (DigitsResNet, digits_leaky_cnn, load_state, pretrained_digits_resnet, save_state,
                     train_digits_model)

__all__ = ["DigitsResNet", "digits_leaky_cnn", "load_state", "pretrained_digits_resnet", "save_state", "train_digits_model"]
