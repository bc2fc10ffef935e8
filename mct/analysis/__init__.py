"""Instruments for looking inside a trained model: attention maps, head ablation, activation patching."""

from mct.analysis.attention import (
    AttentionMaps,
    attention_maps,
    render_attention,
    save_attention_figure,
    select_heads,
)
from mct.analysis.interventions import (
    ablate_heads,
    activation_patching,
    patch_activation,
)

__all__ = ["AttentionMaps", "ablate_heads", "activation_patching", "attention_maps", "patch_activation",
           "render_attention", "save_attention_figure", "select_heads"]
