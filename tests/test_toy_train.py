"""Toy-model training (toy_training.train): a few CPU steps lower the losses; resume; assemble; load."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from dragbench.backbone import load_pretrained
from dragbench.toy.scenes import batch_captions, random_scenes
from toy_training.assemble import assemble
from toy_training.train import TrainConfig, Trainer, parse_args

TINY = dict(
    unet_config=dict(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(8, 16, 16, 16),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=8,
    ),
    vae_config=dict(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=8, sample_size=64, scaling_factor=1.0,
    ),
    text_config=dict(
        hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1, vocab_size=514,
        max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, bos_token_id=0,
        eos_token_id=1, pad_token_id=1,
    ),
)


def _log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_train")
    cfg = TrainConfig(out=str(root / "out"), ckpt=str(root / "ckpt"), batch=8, vae_steps=30, unet_steps=30,
                      vae_lr=3e-3, unet_lr=3e-3, warmup_steps=1, scale_batches=1, log_every=1, **TINY)
    summary = Trainer(cfg).run()
    return cfg, root, summary


def test_short_cpu_run_lowers_both_losses(trained):
    cfg, root, summary = trained
    rows = _log(root / "out" / "train_log.jsonl")
    vae = [r["loss"] for r in rows if r["phase"] == "vae"]
    unet = [r["loss"] for r in rows if r["phase"] == "unet"]
    assert len(vae) == 30 and len(unet) == 30
    assert sum(vae[-5:]) / 5 < 0.8 * sum(vae[:5]) / 5
    assert sum(unet[-5:]) / 5 < 0.8 * sum(unet[:5]) / 5
    scale = [r for r in rows if r["phase"] == "scale"][0]
    assert summary["scaling_factor"] == pytest.approx(1 / scale["latent_std"])
    assert summary["vae_steps"] == 30 and summary["unet_steps"] == 30


def test_resume_continues_and_assembled_pipeline_loads_offline(trained):
    cfg, root, summary = trained
    more = TrainConfig(**{**cfg.__dict__, "unet_steps": 32})
    trainer = Trainer(more)
    trainer.resume()
    assert trainer.state["phase"] == "done" and trainer.state["unet_steps"] == 30
    dest = assemble(root / "out", root / "pipe", dtype="float32")
    bb = load_pretrained(str(dest), local_files_only=True, device="cpu", weights="toy")
    assert bb.latent_scale == pytest.approx(summary["scaling_factor"])
    assert bb.vae_scale_factor == 4
    ema = trainer.ema[0].state_dict()
    for k, v in bb.unet.state_dict().items():
        torch.testing.assert_close(v, ema[k])
    assert bb.encode_prompt("red disc").shape == (1, 77, 16)


class _Payload:
    """A pickled object a checkpoint must never instantiate on load."""

    def __reduce__(self):
        return (print, ("code ran while loading a checkpoint",))


def test_resume_loads_only_tensors_and_plain_containers(trained, tmp_path):
    cfg, root, _ = trained
    blob = torch.load(root / "ckpt" / "state.pt", weights_only=True)  # the real checkpoint is plain data
    assert blob["state"]["phase"] == "done" and isinstance(blob["gen"], torch.Tensor)
    (tmp_path / "ckpt").mkdir()
    torch.save({**blob, "state": _Payload()}, tmp_path / "ckpt" / "state.pt")
    trainer = Trainer(TrainConfig(**{**cfg.__dict__, "ckpt": str(tmp_path / "ckpt")}))
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        trainer.resume()


def test_token_ids_equal_the_tokenizer():
    trainer = Trainer.__new__(Trainer)  # only the tokenizer parts are needed
    from dragbench.tokenizer_offline import build_offline_tokenizer

    trainer.tokenizer, trainer.token_cache = build_offline_tokenizer(), {}
    trainer.device = torch.device("cpu")
    captions = batch_captions(random_scenes(32, 64, torch.Generator().manual_seed(0)))
    expected = trainer.tokenizer(captions, padding="max_length", max_length=77, truncation=True,
                                 return_tensors="pt").input_ids
    assert torch.equal(trainer.token_ids(captions), expected)


def test_cli_flags_map_to_config():
    argv = ["--out", "x", "--device", "cuda", "--vae-steps", "5", "--unet-minutes", "2.5", "--no-amp"]
    cfg = parse_args(argv)
    assert (cfg.out, cfg.device, cfg.vae_steps, cfg.unet_minutes, cfg.amp) == ("x", "cuda", 5, 2.5, False)
    assert cfg.unet_steps is None and cfg.seed == 0
