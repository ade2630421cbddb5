"""Contract tests over every config file (like timm's list_models and the template's experiment=glob(*)).

Every conf/method/*.yaml composes, instantiates offline and edits a tiny sample into a well-formed EditResult;
every conf/experiment/*.yaml composes and expands into the sweep it documents. A new file is picked up
automatically, with no new test code.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from dragbench.backbone import MissingWeightsError
from experiments import CONF_DIR
from methods.base import REQUIRED_INFO, EditResult

METHODS = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))
# Methods whose tiny edit takes > ~20 s on 2 busy CPU cores even with FAST_KNOBS (measured: DragDiffusion
# ~80 s; the tiny DragGAN ensemble takes ~1 s); they run under `-m slow`. Any other (new) method runs by default.
SLOW_METHODS = {"dragdiffusion"}
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
ABLATIONS = sorted(p.stem for p in (CONF_DIR / "ablation").glob("*.yaml"))
FIG7_KNOBS = ("inversion_step", "lora_steps", "unet_block")
PAPER_DEFAULTS = {"inversion_step": 35, "lora_steps": 80, "unet_block": 3}  # protocol §2
# Shrink expensive knobs (when a method has them) so the contract test stays fast; the knob's meaning is kept.
FAST_KNOBS = {
    "lora_steps": 2,
    "max_iters": 2,
    "n_inference_steps": 10,
    "inversion_step": 7,
    "inversion_steps": 2,
    "pti_steps": 2,
    "w_avg_samples": 64,
    "drag_end_step": 2,  # GoodDrag: AlDD drag timesteps
    "track_per_step": 2,  # GoodDrag: tracking rounds per drag timestep
    "steps": 20,  # SDE-Drag: SDE grid (t0 = 0.6 -> 12 UNet calls per chunk)
}


def _locate(path: str) -> object:
    from hydra._internal.utils import _locate as locate

    return locate(path)


def assert_required_info(info: dict) -> None:
    """The `methods.base.REQUIRED_INFO` keys of an "ok" EditResult, with their types and ranges."""
    assert set(REQUIRED_INFO) == {"iterations", "time/<stage>", "peak_mem_mb"}  # update this check with it
    iterations = info.get("iterations")
    assert isinstance(iterations, int) and not isinstance(iterations, bool) and iterations >= 0, iterations
    assert any(key.startswith("time/") for key in info), sorted(info)
    assert isinstance(info.get("peak_mem_mb"), float) and info["peak_mem_mb"] > 0, info.get("peak_mem_mb")


def check_method_contract(name: str, make_cfg, tiny_samples) -> tuple[object, EditResult]:
    """Compose `method=<name>` (FAST_KNOBS), instantiate offline, edit a tiny sample, check the EditResult."""
    cfg = make_cfg(f"method={name}", "eval=fast")
    with open_dict(cfg):
        for knob, value in FAST_KNOBS.items():
            if knob in cfg.method:
                cfg.method[knob] = value
    try:
        method = instantiate(cfg.method, _convert_="all")
    except Exception as err:  # real weights absent: skip, naming what is missing
        if isinstance(err.__cause__ or err, (MissingWeightsError, FileNotFoundError)):
            pytest.skip(f"Requires real weights: {err.__cause__ or err}")
        raise
    sample = tiny_samples[0]
    result = method.edit(sample)
    assert isinstance(result, EditResult) and result.status in ("ok", "unsupported")
    assert isinstance(result.info, dict) and all(isinstance(k, str) for k in result.info)
    for key, value in result.info.items():
        if key.startswith("time/"):
            assert isinstance(value, float) and value >= 0, (key, value)
    if result.status == "unsupported":
        assert isinstance(result.info.get("reason"), str) and result.info["reason"]
        return method, result
    assert_required_info(result.info)
    assert result.image.dtype == np.uint8 and result.image.shape == sample.image.shape
    if result.handles is not None:
        assert result.handles.shape == sample.handles.shape and np.isfinite(result.handles).all()
    return method, result


@pytest.mark.parametrize(
    "name", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW_METHODS else m for m in METHODS]
)
def test_method_config_edits_a_tiny_sample(name, make_cfg, tiny_samples):
    check_method_contract(name, make_cfg, tiny_samples)


def test_a_method_changing_only_the_point_tracker_is_one_file_and_one_yaml(make_cfg, tiny_samples):
    """tests/cosine_tracking.py + tests/conf/method/dragdiffusion_cosine.yaml pass the contract test, and
    the drag loop used that tracker (everything else is DragDiffusion's)."""
    from cosine_tracking import CosineTracker

    cfg = make_cfg("method=dragdiffusion_cosine")
    assert cfg.method._target_ == "methods.dragdiffusion.method.DragDiffusion"
    assert cfg.method.point_tracker.radius == cfg.method.r2 == 3
    method, result = check_method_contract("dragdiffusion_cosine", make_cfg, tiny_samples)
    assert result.status == "ok" and isinstance(method.point_tracker, CosineTracker)
    assert method.point_tracker.calls == result.info["iterations"] - 1 >= 1  # tracks from iteration 2 on


@pytest.mark.parametrize("name", METHODS)
def test_method_yaml_defaults_match_the_python_signature(name):
    node = OmegaConf.load(CONF_DIR / "method" / f"{name}.yaml")
    signature = inspect.signature(_locate(node._target_))
    keys = [k for k in node if k != "_target_"]
    unknown = [k for k in keys if k not in signature.parameters]
    assert not unknown, f"{name}.yaml keys {unknown} are not constructor arguments of {node._target_}"
    for key in keys:
        default = signature.parameters[key].default
        value = OmegaConf.to_container(node, resolve=False)[key]
        if default is inspect.Parameter.empty or isinstance(value, (dict, list)) or "${" in str(value):
            continue
        assert value == default or (isinstance(value, float) and math.isclose(value, default)), (
            f"{name}.yaml {key}={value!r} but {node._target_} defaults to {default!r}"
        )


def _sweep_points(params: dict) -> list[list[str]]:
    """Expand hydra.sweeper.params into one override list per job (the cartesian product)."""
    parser = OverridesParser.create()
    axes = [
        [f"{key}={v}" for v in parser.parse_override(f"{key}={value}").sweep_string_iterator()]
        for key, value in params.items()
    ]
    points = [[]]
    for axis in axes:
        points = [p + [o] for p in points for o in axis]
    return points


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_config_composes_into_its_sweep(name, make_cfg):
    text = (CONF_DIR / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    assert f"python -m experiments.run -m experiment={name}" in text  # the reproduction command
    cfg = make_cfg(f"experiment={name}")
    assert "fig7" in cfg.tags
    points = _sweep_points(cfg.hydra.sweeper.params)
    knob_values = set()
    for overrides in points:
        point = make_cfg(f"experiment={name}", *overrides)
        knobs = tuple(point.method[k] for k in FIG7_KNOBS)
        changed = [k for k in FIG7_KNOBS if point.method[k] != PAPER_DEFAULTS[k]]
        assert len(changed) <= 1, (overrides, knobs)  # one-knob ablations around the paper defaults
        knob_values.add(knobs)
    assert len(knob_values) == len(points)  # every job is a distinct point
    method = instantiate(make_cfg(f"experiment={name}").method, _convert_="all")  # offline: tiny backbone
    assert callable(getattr(method, "edit", None))
    expected = {"fig7": 14, "fig7_inversion_step": 5, "fig7_lora_steps": 6, "fig7_unet_block": 4}.get(name)
    if expected is not None:
        assert len(points) == expected


def test_ablation_group_is_the_union_of_the_three_panels(make_cfg):
    cfg = make_cfg("experiment=fig7")
    swept = [o.split("=", 1)[1] for (o,) in _sweep_points(cfg.hydra.sweeper.params)]
    assert sorted(swept) == ABLATIONS  # every point file is swept, none twice
