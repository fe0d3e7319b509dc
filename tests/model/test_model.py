"""Config, positional embeddings, resizing, presets, FLOPs, save/load round trips."""

import json

import pytest
import torch

from falv import PRESETS, FALConfig, FALForVideoClassification, FALVideoClassifierForVideoClassification, preset
from falv.errors import CheckpointError, ConfigError
from falv.model.flops import count_flops, count_parameters

from .conftest import randomize_, tiny_config


def test_config_json_round_trip(tmp_path):
    cfg = tiny_config(attention_type="axial", position_embedding="space", head_type="mlp",
                      problem_type="multi_label_classification", thresholds=[0.3, 0.5, 0.7],
                      image_mean=(0.5, 0.5, 0.5), image_std=(0.25, 0.25, 0.25))
    cfg.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "fal" and data["id2label"] == {"0": "a", "1": "b", "2": "c"}
    # transformers' TimesformerConfig names for the fields they share
    for key in ("image_size", "patch_size", "num_channels", "num_frames", "hidden_size", "num_hidden_layers",
                "num_attention_heads", "intermediate_size", "attention_type"):
        assert key in data
    assert FALConfig.from_json_file(tmp_path / "config.json") == cfg
    assert cfg.num_labels == 3 and cfg.label2id == {"a": 0, "b": 1, "c": 2}


@pytest.mark.parametrize("bad,message", [
    (dict(attention_type="nope"), "attention_type"),
    (dict(position_embedding="learned"), "position_embedding"),
    (dict(hidden_size=30), "divisible"),
    (dict(image_size=30), "multiple of patch_size"),
    (dict(num_frames=0), "num_frames"),
    (dict(id2label={}), "at least one label"),
    (dict(thresholds=[0.5]), "thresholds"),
    (dict(head_type="conv"), "head_type"),
    (dict(time_embedding_init_std=-1.0), "time_embedding_init_std"),
    (dict(time_embedding_init_std=float("nan")), "time_embedding_init_std"),
])
def test_invalid_configs_raise_clear_errors(bad, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(**bad)


@pytest.mark.parametrize("embedding,has_space,has_time", [
    ("none", False, False), ("space", True, False), ("space_time", True, True)])
def test_position_embedding_variants(embedding, has_space, has_time):
    model = FALForVideoClassification(tiny_config(position_embedding=embedding)).eval()
    names = {n for n, _ in model.named_parameters()}
    assert ("fal.embeddings.pos_embed" in names) == has_space
    assert ("fal.embeddings.time_embed" in names) == has_time
    assert model(torch.randn(1, 4, 3, 32, 32)).logits.shape == (1, 3)


def test_time_embedding_changes_output_only_with_space_time():
    x = torch.randn(1, 4, 3, 32, 32)
    for embedding, should_differ in (("space", False), ("space_time", True)):
        model = randomize_(FALForVideoClassification(tiny_config(position_embedding=embedding))).eval()
        with torch.no_grad():
            reversed_in_time = model(x.flip(1)).logits
            forward = model(x).logits
        # without a time embedding, divided attention is equivariant to frame order
        assert (not torch.allclose(forward, reversed_in_time, atol=1e-5)) == should_differ


@pytest.mark.parametrize("std", [0.0, 0.1, 1.0])
def test_time_embedding_starts_at_the_configured_scale(std):
    """0 (TimeSformer's zeros, every preset but tiny) starts a model blind to frame order when its
    tokens see one frame each; the tiny preset's 1.0 starts it order-aware (docs/model.md)."""
    torch.manual_seed(0)
    model = FALForVideoClassification(tiny_config(time_embedding_init_std=std, num_frames=8, hidden_size=64))
    time = model.fal.embeddings.time_embed
    if std == 0:
        assert not time.any()
    else:
        assert time.std().item() == pytest.approx(std, rel=0.15)
    x = torch.randn(1, 8, 3, 32, 32)
    with torch.no_grad():
        differ = not torch.allclose(model.eval()(x).logits, model(x.flip(1)).logits, atol=1e-6)
    assert differ == (std > 0)


def test_frame_differences_table():
    from falv.model.embeddings import frame_differences

    x = torch.tensor([1.0, 4.0, 4.0, 2.0]).reshape(1, 4, 1, 1, 1).expand(1, 4, 3, 2, 2)
    assert frame_differences(x)[0, :, 0, 0, 0].tolist() == [0.0, 3.0, 0.0, -2.0]


@pytest.mark.parametrize("patch_frames", [1, 2])
def test_motion_input_embeds_each_patch_s_change_from_the_previous_frame(patch_frames):
    """frame_diff adds C channels per frame: a still clip gives the diff weights nothing to see,
    and the rest of the model is unchanged (same tokens, same layout)."""
    torch.manual_seed(0)
    cfg = tiny_config(motion_input="frame_diff", patch_frames=patch_frames)
    model = randomize_(FALForVideoClassification(cfg)).eval()
    c, p = cfg.num_channels, cfg.patch_size
    assert model.fal.embeddings.patch_embed.proj.weight.shape[1] == patch_frames * 2 * c * p * p
    still = torch.randn(1, 1, 3, 32, 32).expand(1, 4, 3, 32, 32)
    moving = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        before = model(still).logits, model(moving).logits
        weight = model.fal.embeddings.patch_embed.proj.weight.view(cfg.hidden_size, patch_frames, 2, c * p * p)
        weight[:, :, 1] = 0  # the weights that read the differences
        after = model(still).logits, model(moving).logits
    torch.testing.assert_close(after[0], before[0])  # a still clip has no change to embed
    assert not torch.allclose(after[1], before[1])  # a moving one does


def test_motion_input_is_saved_checked_and_not_converted_to_timesformer(tmp_path):
    from falv.hub.convert import timesformer_key_map

    cfg = tiny_config(motion_input="frame_diff")
    assert cfg.to_dict()["motion_input"] == "frame_diff" and "motion_input" not in tiny_config().to_dict()
    FALForVideoClassification(cfg).save_pretrained(tmp_path)
    loaded = FALForVideoClassification.from_pretrained(tmp_path)
    assert loaded.config.motion_input == "frame_diff"
    with pytest.raises(ConfigError, match="motion_input"):
        tiny_config(motion_input="flow")
    with pytest.raises(CheckpointError, match="motion_input"):
        timesformer_key_map(cfg, "transformers")


def test_the_tiny_preset_starts_its_time_embedding_random_and_base_at_zero():
    assert preset("tiny").time_embedding_init_std == 1.0
    assert preset("base").time_embedding_init_std == preset("fal").time_embedding_init_std == 0.0
    cfg = preset("tiny")
    assert FALConfig.from_dict(cfg.to_dict()) == cfg
    # a config.json written before the field existed reads as TimeSformer's zeros
    data = cfg.to_dict()
    del data["time_embedding_init_std"]
    assert FALConfig.from_dict(data).time_embedding_init_std == 0.0


@pytest.mark.parametrize("scheme", ["divided_space_time", "joint_space_time", "space_only",
                                    "sparse_local_global", "axial"])
def test_runs_on_other_clip_lengths_and_sizes(scheme):
    model = FALForVideoClassification(tiny_config(attention_type=scheme)).eval()
    for frames, h, w in [(4, 32, 32), (7, 32, 32), (2, 48, 40), (9, 24, 56)]:
        assert model(torch.randn(1, frames, 3, h, w)).logits.shape == (1, 3)


@pytest.mark.parametrize("scheme", ["sparse_local_global", "axial", "joint_space_time"])
def test_training_after_inference_on_the_same_clip_shape(scheme):
    """Group indices cached by a forward under inference_mode serve a later training step
    (falv serve labels, then retrains on corrections, in one process)."""
    model = FALForVideoClassification(tiny_config(attention_type=scheme))
    x = torch.randn(1, 5, 3, 40, 32)  # a shape no other test uses: the cache starts empty for it
    with torch.inference_mode():
        model.eval()(x)
    loss = model.train()(x).logits.sum()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_load_time_resize_of_position_embeddings(tmp_path):
    """from_pretrained(num_frames=, image_size=) resizes the stored embeddings for good."""
    model = randomize_(FALForVideoClassification(tiny_config())).eval()
    model.save_pretrained(tmp_path)
    x = torch.randn(1, 8, 3, 32, 32)
    resized = FALForVideoClassification.from_pretrained(tmp_path, num_frames=8, image_size=48)
    assert resized.config.num_frames == 8 and resized.fal.embeddings.time_embed.shape[1] == 8
    assert resized.fal.embeddings.pos_embed.shape[1] == 1 + 6 * 6
    assert resized(torch.randn(1, 8, 3, 48, 48)).logits.shape == (1, 3)
    with torch.no_grad():
        assert torch.isfinite(model(x).logits).all()


def test_save_and_load_round_trip(tmp_path):
    model = randomize_(FALForVideoClassification(tiny_config(head_type="mlp"))).eval()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json", "model.safetensors", "preprocessor_config.json"]
    loaded = FALVideoClassifierForVideoClassification.from_pretrained(tmp_path)
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits, rtol=0, atol=0)
    assert loaded.config == model.config and not loaded.training


def test_new_label_set_gets_a_fresh_head(tmp_path):
    model = randomize_(FALForVideoClassification(tiny_config())).eval()
    model.save_pretrained(tmp_path)
    tuned = FALForVideoClassification.from_pretrained(tmp_path, labels=["x", "y", "z", "w", "v"])
    assert tuned.config.labels == ["x", "y", "z", "w", "v"]
    assert tuned.head.fc.weight.shape == (5, 32)
    torch.testing.assert_close(tuned.fal.norm.weight, model.fal.norm.weight)
    # the new head is initialised like a fresh model's (the rest is built on the meta device)
    assert torch.count_nonzero(tuned.head.fc.bias) == 0
    assert 0.005 < tuned.head.fc.weight.std() < 0.04  # trunc-normal, std initializer_range=0.02


def test_loading_materialises_every_tensor_with_the_stored_values(tmp_path):
    model = randomize_(FALForVideoClassification(tiny_config())).eval()
    model.save_pretrained(tmp_path)
    loaded = FALForVideoClassification.from_pretrained(tmp_path)
    tensors = dict(loaded.named_parameters()) | dict(loaded.named_buffers())
    assert all(t.device.type == "cpu" and t.requires_grad for t in loaded.parameters())
    expected = model.state_dict()
    assert set(tensors) == set(expected)
    for name, tensor in tensors.items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0, msg=name)
    loaded.train()  # trainable as loaded: gradients reach every parameter
    loaded(torch.randn(1, 4, 3, 32, 32)).logits.sum().backward()
    assert all(p.grad is not None for p in loaded.parameters())


def test_corrupt_weights_are_reported(tmp_path):
    FALForVideoClassification(tiny_config()).save_pretrained(tmp_path)
    other = tmp_path / "other"
    FALForVideoClassification(tiny_config(hidden_size=64)).save_pretrained(other)
    (tmp_path / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="does not match its config.json"):
        FALForVideoClassification.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        FALForVideoClassification.from_pretrained(tmp_path / "missing-dir")
    (other / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        FALForVideoClassification.from_pretrained(other)


def test_multilabel_loss_is_bce():
    model = FALForVideoClassification(tiny_config(problem_type="multi_label_classification"))
    labels = torch.tensor([[1.0, 0.0, 1.0]])
    out = model(torch.randn(1, 4, 3, 32, 32), labels=labels)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, labels)
    torch.testing.assert_close(out.loss, expected)


def test_presets_exist_with_documented_shapes():
    assert list(PRESETS) == ["tiny", "small", "base", "fal", "large", "hr", "long"]
    base = preset("base")
    assert (base.hidden_size, base.num_hidden_layers, base.num_attention_heads) == (768, 12, 12)
    assert (base.num_frames, base.image_size) == (8, 224)
    assert preset("hr").image_size == 448 and preset("long").num_frames == 96
    # the FAL web page's model (seeds/001): 224x224, 8 frames, width 768, 12 heads, 24 layers
    fal = preset("fal", id2label={i: str(i) for i in range(500)})
    assert (fal.image_size, fal.num_frames, fal.hidden_size, fal.num_attention_heads, fal.num_hidden_layers) == (
        224, 8, 768, 12, 24)
    assert count_parameters(fal) == 242_151_668  # docs/model.md: why not the page's 375M
    with pytest.raises(ConfigError, match="valid presets"):
        preset("huge")


def test_flop_counter_matches_hand_count():
    """Joint attention, one block: linears + QK^T + AV, 2 FLOPs per multiply-add."""
    cfg = tiny_config(attention_type="joint_space_time", num_hidden_layers=1)
    d, m, n_tok, p = cfg.hidden_size, cfg.intermediate_size, 4 * 16, 3 * 8 * 8
    L = n_tok + 1
    patch = 2 * n_tok * p * d
    attn = 2 * L * d * 3 * d + 2 * 2 * L * L * d + 2 * L * d * d
    mlp = 2 * L * (d * m + m * d)
    head = 2 * d * 3
    assert count_flops(cfg) == patch + attn + mlp + head


def test_divided_is_cheaper_than_joint_and_grows_linearly():
    # 64 patches a frame: with tiny's 16 a frame, joint attention over 129 tokens costs little
    joint = [count_flops(preset("tiny", patch_size=8, attention_type="joint_space_time", num_frames=f))
             for f in (8, 16, 32)]
    divided = [count_flops(preset("tiny", patch_size=8, num_frames=f)) for f in (8, 16, 32)]
    assert all(d < j for d, j in zip(divided, joint))
    assert joint[2] / joint[1] > divided[2] / divided[1]
    assert count_parameters(preset("base", id2label={i: str(i) for i in range(400)})) == 121_566_352


@pytest.mark.parametrize("embedding", ["none", "space", "space_time"])
@pytest.mark.parametrize("scheme", ["divided_space_time", "space_only"])
def test_flops_are_counted_for_every_position_embedding(embedding, scheme):
    cfg = tiny_config(position_embedding=embedding, attention_type=scheme)
    flops = count_flops(cfg)
    # the embedding adds no matmul: every setting counts the same
    assert flops == count_flops(tiny_config(attention_type=scheme)) > 0


def test_background_label_round_trip_and_checks(tmp_path):
    cfg = tiny_config(id2label={0: "a", 1: "b", 2: "background"}, background_label="background")
    assert cfg.action_labels == ["a", "b"] and cfg.labels == ["a", "b", "background"]
    cfg.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["background_label"] == "background"
    assert FALConfig.from_json_file(tmp_path / "config.json") == cfg
    # a model without one writes no key, so its config.json stays as it was
    plain = tiny_config()
    assert plain.background_label is None and plain.action_labels == plain.labels
    assert "background_label" not in plain.to_dict()
    # new labels keep the background label only when it is among them
    assert cfg.with_labels(["x", "background"]).background_label == "background"
    assert cfg.with_labels(["x", "y"]).background_label is None
    with pytest.raises(ConfigError, match="not one of the labels"):
        tiny_config(background_label="background")
    with pytest.raises(ConfigError, match="single-label"):
        tiny_config(id2label={0: "a", 1: "background"}, background_label="background",
                    problem_type="multi_label_classification")
