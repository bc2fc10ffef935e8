"""Attention maps of a prompt plus the model's own completion: shapes, causality, rendering, figures."""

import pytest
import torch
from rich.console import Console

import mct
from mct.analysis.attention import AttentionMaps, render_attention, save_attention_figure, select_heads
from mct.errors import MctError
from tiny_checkpoint import make_checkpoint


@pytest.fixture(scope="module")
def maps(tmp_path_factory) -> AttentionMaps:
    predictor = mct.load(make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt"), device="cpu")
    return predictor.attention("12+34=", max_new_tokens=5)


def test_maps_cover_the_prompt_and_the_models_own_completion(maps):
    assert maps.tokens[:6] == list("12+34=") and maps.num_prompt_tokens == 6
    assert "".join(maps.tokens[6:]) == maps.completion
    T = len(maps.tokens)
    assert 7 <= T <= 11
    assert maps.weights.shape == (2, 2, T, T)


def test_rows_are_causal_distributions(maps):
    weights = maps.weights
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    T = weights.shape[-1]
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    assert float(weights[..., future].abs().max()) == 0.0


def test_to_dict_selects_layers_and_heads(maps):
    data = maps.to_dict(layers=[1], heads=[0])
    assert data["layers"] == [1] and data["heads"] == [0]
    T = len(maps.tokens)
    assert len(data["weights"]) == 1 and len(data["weights"][0]) == 1 and len(data["weights"][0][0]) == T
    assert data["weights"][0][0][3] == pytest.approx(maps.weights[1, 0, 3].tolist(), abs=1e-6)
    assert len(maps.to_dict()["weights"]) == 2


def test_render_makes_one_labelled_heatmap_per_chosen_head(maps):
    assert len(render_attention(maps.tokens, maps.weights)) == 4
    tables = render_attention(maps.tokens, maps.weights, layers=1, heads=[1])
    assert len(tables) == 1
    console = Console(width=200, no_color=True, record=True, file=open("/dev/null", "w"))
    console.print(tables[0])
    text = console.export_text()
    assert "layer 1 head 1" in text
    assert " 5     = │" in text  # query rows are labelled with position and token
    assert "█" in text or "▓" in text or "▒" in text or "░" in text


def test_out_of_range_layer_or_head_is_a_user_error(maps):
    with pytest.raises(MctError, match="^layer 2 is out of range: the model has 2 layers"):
        render_attention(maps.tokens, maps.weights, layers=2)
    with pytest.raises(MctError, match="^head -1 is out of range"):
        select_heads(2, 2, None, -1)


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_figure_format_follows_the_suffix(maps, tmp_path, suffix, magic):
    path = save_attention_figure(maps.tokens, maps.weights, tmp_path / f"attn{suffix}", layers=[0], heads=[0])
    assert path.read_bytes().startswith(magic)
    assert [p.name for p in tmp_path.iterdir()] == [f"attn{suffix}"]  # no temporary file left


def test_figure_of_every_head_and_bad_suffix(maps, tmp_path):
    path = save_attention_figure(maps.tokens, maps.weights.tolist(), tmp_path / "all.png")
    assert path.stat().st_size > 1000
    with pytest.raises(MctError, match=".png, .svg or .pdf"):
        save_attention_figure(maps.tokens, maps.weights, tmp_path / "attn.jpg")
