"""Model zoo: small reference networks used by tests, the demo and benchmarks."""
from .digits import (DigitsResNet, digits_leaky_cnn, load_state, pretrained_digits_resnet, save_state,
                     train_digits_model)
from .digits_vit import DigitsTransformerEncoder, DigitsViT, pretrained_digits_vit, train_digits_vit

__all__ = ["DigitsResNet", "DigitsTransformerEncoder", "DigitsViT", "pretrained_digits_vit", "train_digits_vit", "digits_leaky_cnn", "load_state", "pretrained_digits_resnet", "save_state", "train_digits_model"]
