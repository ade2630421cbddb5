"""DragGAN's ensemble (protocol §12): CLIP routing with known answers, the tiny random CLIP's routing
is deterministic and recorded, every ensemble entry is in the preflight, IF unpasted has a known answer, and
`method=draggan_tiny` runs real DragBench samples of every category with status ok (issue 16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from shared_data import OFFICIAL_REF, REAL_SAMPLES

from dragbench.sample import DragSample
from dragbench.weights import STYLEGAN2_URLS, MissingWeightsError
from eval.aggregate import summarize
from eval.evaluator import Evaluator
from eval.metrics import IMAGE_FIDELITY, IMAGE_FIDELITY_UNPASTED, ScoringInputs
from methods.draggan import DragGAN
from methods.draggan.clip_router import ClipRouter, build_tiny_clip, clip_requirements, pick_domain
from methods.draggan.routing import parse_domains

REPO = Path(__file__).resolve().parents[1]
PAPER_DOMAINS = {  # DragGAN's scripts/download_models.json + README's StyleGAN-Human and LHQ links
    "stylegan2-ffhq-512x512.pkl": 512,
    "stylegan2-afhqcat-512x512.pkl": 512,
    "stylegan2-car-config-f.pkl": 512,
    "stylegan2-cat-config-f.pkl": 256,
    "stylegan2_lions_512_pytorch.pkl": 512,
    "stylegan2_dogs_1024_pytorch.pkl": 1024,
    "stylegan2_horses_256_pytorch.pkl": 256,
    "stylegan2_elephants_512_pytorch.pkl": 512,
    "stylegan_human_v2_512.pkl": 512,
    "stylegan2-lhq-256x256.pkl": 256,
}


def _kwargs(name: str, **overrides) -> dict:
    cfg = OmegaConf.load(REPO / f"conf/method/{name}.yaml")
    cfg.device, cfg.seed = "cpu", 0
    kwargs = OmegaConf.to_container(cfg, resolve=False)
    kwargs.pop("_target_")
    return {**kwargs, **overrides}


def _sample(size: int = 48, seed: int = 0) -> DragSample:
    rng = np.random.default_rng(seed)
    image = (rng.random((size, size + 16, 3)) * 255).astype(np.uint8)
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[10:30, 10:40] = True
    return DragSample("animals/s", "animals", "", image, mask, np.array([[20.0, 20.0]]), np.array([[26.0, 22.0]]))


def test_pick_domain_known_answer() -> None:
    texts = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 5.0]])  # norms do not matter
    image = torch.tensor([0.6, 0.8, 0.0]) * 3
    choice = pick_domain(image, texts, ["faces", "cats", "cars"])
    assert choice.domain == "cats"
    assert choice.similarities == pytest.approx({"faces": 0.6, "cats": 0.8, "cars": 0.0}, abs=1e-12)
    tie = pick_domain(torch.tensor([1.0, 1.0, 0.0]), texts, ["faces", "cats", "cars"])
    assert tie.domain == "faces"  # equal cosines: the first domain in config order
    with pytest.raises(ValueError, match="3 text embeddings for 2 domains"):
        pick_domain(image, texts, ["faces", "cats"])


class _ColourClip(torch.nn.Module):
    """A stand-in CLIP with constructed embeddings: a text is one-hot on the colour it names, an image is its
    mean RGB. Counts text-tower calls."""

    COLOURS = ("red", "green", "blue")

    def __init__(self) -> None:
        super().__init__()
        self.text_calls = 0

    def get_text_features(self, input_ids: torch.Tensor, **_: object) -> torch.Tensor:
        self.text_calls += 1
        return torch.eye(3)[input_ids[:, 0]]

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pixel_values.mean(dim=(2, 3))  # (1, 3)


class _ColourTokenizer:
    def __call__(self, texts: list[str], **_: object) -> dict:
        ids = [[_ColourClip.COLOURS.index(t.split()[-1])] for t in texts]
        return _Batch(input_ids=torch.tensor(ids))


class _Batch(dict):
    def to(self, device: torch.device) -> _Batch:
        return self


class _Pixels:
    def __call__(self, images: list[np.ndarray], **_: object):
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
        return type("Out", (), {"pixel_values": x})


def test_router_picks_the_domain_its_constructed_embeddings_say_and_embeds_texts_once() -> None:
    model = _ColourClip()
    descriptions = {"roses": "a photo of red", "grass": "a photo of green", "sea": "a photo of blue"}
    router = ClipRouter(model, _ColourTokenizer(), _Pixels(), descriptions, torch.device("cpu"))
    for rgb, expected in (((200, 30, 10), "roses"), ((10, 180, 40), "grass"), ((0, 20, 250), "sea")):
        image = np.zeros((8, 12, 3), np.uint8) + np.array(rgb, np.uint8)
        choice = router(image)
        assert choice.domain == expected
        colour = np.array(rgb) / np.linalg.norm(rgb)
        assert list(choice.similarities.values()) == pytest.approx(list(colour), abs=1e-6)
    assert model.text_calls == 1  # text embeddings once per router


def test_tiny_clip_routing_is_deterministic_and_recorded() -> None:
    fast = dict(max_iters=1, inversion_steps=1, w_avg_samples=16)
    results = [DragGAN(**_kwargs("draggan_tiny", **fast)).edit(_sample()) for _ in range(2)]
    a, b = (r.info for r in results)
    domains = list(_kwargs("draggan_tiny")["domains"])
    assert set(a) >= {"gan_model", "time/routing", *(f"clip_sim/{d}" for d in domains)}
    sims = {d: a[f"clip_sim/{d}"] for d in domains}
    assert a["gan_model"] == max(sims, key=sims.get) and all(-1 <= s <= 1 for s in sims.values())
    assert {k: v for k, v in a.items() if k.startswith("clip_sim/") or k == "gan_model"} == {
        k: v for k, v in b.items() if k.startswith("clip_sim/") or k == "gan_model"
    }
    np.testing.assert_array_equal(results[0].image, results[1].image)
    m1, _, _ = build_tiny_clip()
    m2, _, _ = build_tiny_clip()
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters(), strict=True))
    # the domains are different generators (own seeds), not one generator under ten names
    method = DragGAN(**_kwargs("draggan_tiny", **fast))
    g1, g2 = method.generator("ffhq")[0], method.generator("lhq")[0]
    assert not torch.equal(g1.mapping.fc0.weight, g2.mapping.fc0.weight)


def test_a_saved_clip_checkpoint_loads_through_the_real_path_and_routes_the_same(tmp_path: Path) -> None:
    """The default's code path (transformers `from_pretrained` of a folder or hub id), offline: the tiny CLIP
    saved as a checkpoint folder is declared present by the preflight and routes exactly as in memory."""
    model, tokenizer, processor = build_tiny_clip()
    for part in (model, tokenizer, processor):
        part.save_pretrained(tmp_path)
    assert all(r.present for r in clip_requirements(str(tmp_path)))
    assert not any(r.present for r in clip_requirements(str(tmp_path / "missing")))
    descriptions = {"faces": "a photo of a face", "land": "a landscape", "cars": "a car"}
    in_memory = ClipRouter(model, tokenizer, processor, descriptions, torch.device("cpu"))
    loaded = ClipRouter.from_checkpoint(str(tmp_path), descriptions, torch.device("cpu"))
    image = _sample().image
    got, want = loaded(image), in_memory(image)
    assert got.domain == want.domain
    # equal up to float order (one model's kernels may take another path on another CPU: 3.4e-8 measured)
    assert got.similarities == pytest.approx(want.similarities, abs=1e-6)


def test_category_routing_still_marks_unrouted_categories_unsupported() -> None:
    routes = {"human_head": "ffhq", "*": None}
    method = DragGAN(**_kwargs("draggan_tiny", routing="category", category_routes=routes))
    result = method.edit(_sample())
    assert result.status == "unsupported" and result.info["gan_model"] == ""
    assert not any(k.startswith("clip_sim/") for k in result.info)


def test_every_ensemble_entry_is_in_the_preflight(make_cfg, monkeypatch, tmp_path: Path) -> None:
    from experiments.weights_preflight import check_weights

    monkeypatch.setenv("DRAGGAN_CKPT_DIR", str(tmp_path))
    cfg = make_cfg("method=draggan", "eval=tiny")
    domains = OmegaConf.to_container(cfg.method.domains, resolve=True)
    assert {Path(d["checkpoint"]).name: d["resolution"] for d in domains.values()} == PAPER_DOMAINS
    (tmp_path / "stylegan2-ffhq-512x512.pkl").write_bytes(b"x")
    kwargs = {k: cfg.method[k] for k in ("routing", "category_routes", "clip_checkpoint", "lpips_net")}
    rows = DragGAN.weight_requirements(domains, **kwargs, inversion_loss="mse")
    pickles = {r.file: r for r in rows if r.file.endswith(".pkl")}
    assert set(pickles) == set(PAPER_DOMAINS)
    assert [f for f, r in pickles.items() if r.present] == ["stylegan2-ffhq-512x512.pkl"]
    assert all(r.source == STYLEGAN2_URLS[f] for f, r in pickles.items())  # every entry says where it comes from
    assert "drop method.domains.lhq" in pickles["stylegan2-lhq-256x256.pkl"].how
    assert "drive.google.com" in pickles["stylegan_human_v2_512.pkl"].how
    clip = [r for r in rows if r.source == "openai/clip-vit-large-patch14"]
    assert {r.file for r in clip} == {
        "config.json",
        "model.safetensors",
        "vocab.json",
        "merges.txt",
        "preprocessor_config.json",
    }
    with pytest.raises(MissingWeightsError) as err:
        check_weights(cfg)
    message = str(err.value)
    assert "\n" not in message and "stylegan2_dogs_1024_pytorch.pkl" in message
    assert "stylegan2-ffhq-512x512.pkl" not in message  # present: not named
    tiny = make_cfg("method=draggan_tiny", "eval=tiny")
    check_weights(tiny)  # random generators + random CLIP: nothing to check


def test_a_wrong_domain_resolution_or_entry_fails_with_the_fix(monkeypatch) -> None:
    with pytest.raises(ValueError, match="domains.ffhq needs exactly"):
        parse_domains({"ffhq": {"checkpoint": "random", "resolution": 128}})
    lhq_only = {"lhq": _kwargs("draggan_tiny")["domains"]["lhq"]}  # category_routes still names ffhq ...
    assert list(DragGAN(**_kwargs("draggan_tiny", domains=lhq_only)).domains) == ["lhq"]  # ... unused by CLIP
    with pytest.raises(ValueError, match="category_routes.\\*='ffhq' is not a key of method.domains"):
        DragGAN(**_kwargs("draggan_tiny", domains=lhq_only, routing="category"))
    from methods.draggan import method as module

    real = module.build_tiny_generator
    monkeypatch.setattr(module, "build_tiny_generator", lambda **kw: real(**{**kw, "resolution": 64}))
    method = DragGAN(**_kwargs("draggan_tiny"))  # a "checkpoint" of 64 px where the domain says 128
    with pytest.raises(ValueError, match="64px generator but the domain says resolution 128; fix method.domains"):
        method.generator("ffhq")


def _fidelity(a: np.ndarray, b: np.ndarray) -> float:
    """An exact stand-in for 1 − LPIPS: 1 − mean |a − b| / 255."""
    return 1.0 - float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean()) / 255


def test_unpasted_fidelity_known_answer() -> None:
    original = np.full((20, 40, 3), 100, np.uint8)
    edited = original.copy()
    edited[0:20, 10:30] = 151  # the method's square (20 x 20 of 20 x 40), 51 levels off; the rest pasted back
    sample = DragSample("c/s", "c", "", original, np.zeros((20, 40), bool), np.zeros((1, 2)), np.ones((1, 2)))
    inputs = lambda box: ScoringInputs(sample, edited, None, None, _fidelity, "standard", None, box)  # noqa: E731
    assert IMAGE_FIDELITY.compute(inputs((10, 0, 30, 20))).value == pytest.approx(1 - 0.2 * 0.5)  # diluted
    assert IMAGE_FIDELITY_UNPASTED.compute(inputs((10, 0, 30, 20))).value == pytest.approx(0.8)
    assert IMAGE_FIDELITY_UNPASTED.compute(inputs((0, 0, 40, 20))).value == pytest.approx(0.9)  # whole = IF
    assert np.isnan(IMAGE_FIDELITY_UNPASTED.compute(inputs(None)).value)  # nothing pasted back: undefined
    with pytest.raises(ValueError, match="not inside the image"):
        IMAGE_FIDELITY_UNPASTED.compute(inputs((10, 0, 50, 20)))
    calls = []
    counted = lambda a, b: calls.append(1) or _fidelity(a, b)  # noqa: E731
    featurize = lambda image, prompt: torch.zeros(1, 4, 4)  # noqa: E731
    score = Evaluator(featurize, counted).score(sample, edited, regenerated_box=(0, 0, 40, 20))
    assert score.values["image_fidelity_unpasted"].value == score.values["image_fidelity"].value
    assert len(calls) == 1  # one LPIPS call serves both when the box is the whole image
    rows = [
        dict(
            sample_id=f"s{i}",
            category="c",
            status="ok",
            mean_distance=1.0,
            image_fidelity=0.9,
            image_fidelity_unpasted=v,
        )
        for i, v in enumerate((np.nan, np.nan))
    ]
    pairs = [dict(sample_id=f"s{i}", category="c", distance=1.0) for i in range(2)]
    import pandas as pd

    out = summarize(pd.DataFrame(rows), pd.DataFrame(pairs), n_boot=20)
    assert "image_fidelity_unpasted" not in out  # a method without a paste step: not reported
    rows[0]["image_fidelity_unpasted"] = 0.5
    out = summarize(pd.DataFrame(rows), pd.DataFrame(pairs), n_boot=20)
    assert out["image_fidelity_unpasted"] == 0.5  # averaged over the samples it is defined on


def _run_job(run_on_real_samples, categories: list[str], resize: int | None) -> list[dict]:
    rows, images = run_on_real_samples(
        "job",
        "method=draggan_tiny",
        f"dataset.categories=[{','.join(categories)}]",
        f"dataset.resize={'null' if resize is None else resize}",
        "method.max_iters=2",
        "method.inversion_steps=2",
        "method.w_avg_samples=32",
    )
    assert [r["status"] for r in rows] == ["ok"] * len(rows), [r.get("error") for r in rows]
    domains = set(_kwargs("draggan_tiny")["domains"])
    assert all(r["info/gan_model"] in domains for r in rows)
    for r, edited in zip(rows, images, strict=True):  # edits sort like the rows (category order)
        assert edited.shape[:2] == (int(r["eval_height"]), int(r["eval_width"]))  # the input's size
        assert 0 < float(r["image_fidelity_unpasted"]) <= float(r["image_fidelity"]) + 1e-6
    return rows


def _need_real() -> None:
    if not (REAL_SAMPLES.is_dir() and (OFFICIAL_REF / "tiny-sd15").is_dir()):
        pytest.skip(f"real DragBench samples / tiny SD weights not found under {REAL_SAMPLES.parent}")


def test_tiny_ensemble_on_two_real_samples_is_ok_and_deterministic(run_on_real_samples) -> None:
    _need_real()
    from dragbench import load_sample

    cats = ["building_countryside_view", "human_full_body"]  # 341 x 512 and 768 x 512: crops of the canvas
    rows = _run_job(run_on_real_samples, cats, 256)  # eval (DIFT) at 256 px wide keeps this fast
    assert [r["category"] for r in rows] == cats
    fast = dict(max_iters=2, inversion_steps=2, w_avg_samples=32)
    for category in cats:  # the method itself, twice on the full-size sample: same route, same pixels
        sample = load_sample(REAL_SAMPLES / category / f"{category}_1")
        a, b = (DragGAN(**_kwargs("draggan_tiny", **fast)).edit(sample) for _ in range(2))
        assert a.status == b.status == "ok" and a.image.shape == sample.image.shape
        assert a.info["gan_model"] == b.info["gan_model"]
        np.testing.assert_array_equal(a.image, b.image)


@pytest.mark.slow
def test_tiny_ensemble_covers_every_real_category(run_on_real_samples) -> None:
    _need_real()
    categories = sorted(p.name for p in REAL_SAMPLES.iterdir() if p.is_dir())
    rows = _run_job(run_on_real_samples, categories, 256)  # native size: ~200 s of DIFT on 2 cores
    assert {r["category"] for r in rows} == set(categories) and len(categories) == 10
    assert len({r["info/gan_model"] for r in rows}) >= 3  # the tiny CLIP spreads them over several domains
