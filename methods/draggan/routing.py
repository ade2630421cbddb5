"""Which StyleGAN2 of the ensemble edits a sample (protocol §12).

The DragDiffusion paper ran DragGAN as an ensemble: each StyleGAN2 has a text description and each DragBench
image goes to the model whose description has the highest CLIP image-text similarity (`routing: clip`,
methods/draggan/clip_router.py). `routing: category` keeps the older name-based map (a DragBench category ->
domain name, null = unsupported) as an option. The ensemble itself is config: one `Domain` per generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ROUTING_MODES = ("clip", "category")
DEFAULT_ROUTE_KEY = "*"  # category-routing entry used for categories not listed explicitly
RANDOM_WEIGHTS = "random"  # a domain checkpoint meaning "build a tiny random generator" (weights=random)
_DOMAIN_KEYS = {"checkpoint", "description", "resolution"}
_OPTIONAL_DOMAIN_KEYS = {"seed", "square"}


@dataclass(frozen=True)
class Domain:
    """One generator of the ensemble.

    Attributes:
        name: the key in `method.domains` (recorded per sample as `info/gan_model`).
        checkpoint: .pkl / .safetensors / .pt path, or "random" (tiny random generator from `tiny_generator`).
        description: the text CLIP compares each image with.
        resolution: the generator's native square resolution; its canvas (methods/draggan/canvas.py) is this
            size, and a loaded checkpoint of another size is refused.
        seed: tiny random generators only: the seed it is built with (None: `tiny_generator.seed`).
        square: tiny random generators only: False builds StyleGAN-Human's R x R/2 layout (padded to the
            square canvas as DragGAN does); a loaded checkpoint's layout comes from its weights.
    """

    name: str
    checkpoint: str
    description: str
    resolution: int
    seed: int | None = None
    square: bool = True

    @property
    def is_random(self) -> bool:
        return self.checkpoint == RANDOM_WEIGHTS


def parse_domains(domains: Mapping[str, Mapping[str, Any]]) -> dict[str, Domain]:
    """`method.domains` (name -> {checkpoint, description, resolution[, seed, square]}) as `Domain`s, in order.

    Raises:
        ValueError: no domain, or an entry with missing / unknown keys or a non-positive resolution.
    """
    if not domains:
        raise ValueError(
            "method.domains is empty; configure at least one generator (see conf/method/draggan.yaml)"
        )
    out = {}
    for name, entry in domains.items():
        keys = set(entry)
        missing, unknown = _DOMAIN_KEYS - keys, keys - _DOMAIN_KEYS - _OPTIONAL_DOMAIN_KEYS
        if missing or unknown:
            raise ValueError(
                f"method.domains.{name} needs exactly {sorted(_DOMAIN_KEYS)} (+ optional seed, square); "
                f"missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        if int(entry["resolution"]) <= 0:
            raise ValueError(f"method.domains.{name}.resolution must be > 0, got {entry['resolution']}")
        seed = entry.get("seed")
        out[str(name)] = Domain(
            str(name),
            str(entry["checkpoint"]),
            str(entry["description"]),
            int(entry["resolution"]),
            None if seed is None else int(seed),
            bool(entry.get("square", True)),
        )
    return out


def route_by_category(category: str, routes: Mapping[str, str | None]) -> str | None:
    """`routing: category`: the domain for `category`, or None when none fits.

    Args:
        category: DragBench category folder name.
        routes: category -> domain name (or None); key "*" is the fallback for unlisted categories.
    """
    if category in routes:
        return routes[category]
    return routes.get(DEFAULT_ROUTE_KEY)


def check_routing(routing: str, routes: Mapping[str, str | None], domains: Mapping[str, Domain]) -> None:
    """Raise ValueError for an unknown routing mode or, with routing "category", a route naming no configured
    domain (with CLIP routing the routes are unused, so dropping a domain from the ensemble stays one edit)."""
    if routing not in ROUTING_MODES:
        raise ValueError(f"method.routing must be one of {ROUTING_MODES}, got {routing!r}")
    if routing != "category":
        return
    for category, name in routes.items():
        if name is not None and name not in domains:
            raise ValueError(
                f"method.category_routes.{category}={name!r} is not a key of method.domains; "
                f"valid: {sorted(domains)}"
            )
