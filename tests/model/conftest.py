import pytest
import torch

from falv import FALConfig


def tiny_config(**overrides) -> FALConfig:
    """A model small enough to run every scheme in milliseconds: 4 frames of 32x32, 8x8 patches."""
    base = dict(image_size=32, patch_size=8, num_frames=4, hidden_size=32, num_hidden_layers=2,
                num_attention_heads=4, intermediate_size=64, id2label={0: "a", 1: "b", 2: "c"})
    base.update(overrides)
    return FALConfig(**base)


def randomize_(model: torch.nn.Module, std: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values (default init leaves some at zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
