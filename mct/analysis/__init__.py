"""Instruments for looking inside a trained model: attention maps (ablation and patching to come)."""

from mct.analysis.attention import (
    AttentionMaps,
    attention_maps,
    render_attention,
    save_attention_figure,
    select_heads,
)

__all__ = ["AttentionMaps", "attention_maps", "render_attention", "save_attention_figure", "select_heads"]
