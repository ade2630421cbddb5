"""Which StyleGAN2 checkpoint edits which DragBench category (protocol §5).

The DragDiffusion paper picked, per image, the generator whose domain text had the highest CLIP similarity
to the image. That CLIP routing is NOT implemented here: routing is a category -> checkpoint-name map from
config (defaults follow the official checkpoints' domains); a category that maps to null is unsupported.
"""

from __future__ import annotations

DEFAULT_ROUTE_KEY = "*"  # routing entry used for categories not listed explicitly


def route(category: str, routing: dict[str, str | None]) -> str | None:
    """Checkpoint name for `category`, or None when no generator fits.

    Args:
        category: DragBench category folder name.
        routing: category -> checkpoint name (or None); key "*" is the fallback for unlisted categories.
    """
    if category in routing:
        return routing[category]
    return routing.get(DEFAULT_ROUTE_KEY)


def check_routing(routing: dict[str, str | None], checkpoints: dict[str, str]) -> None:
    """Raise ValueError if a route names a checkpoint that is not configured (lists the valid names)."""
    for category, name in routing.items():
        if name is not None and name not in checkpoints:
            raise ValueError(
                f"method.routing.{category}={name!r} is not a key of method.checkpoints; "
                f"valid: {sorted(checkpoints)}"
            )
