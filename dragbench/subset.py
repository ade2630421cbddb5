"""The quick-run knobs every dataset accepts: `categories` (only these) then `limit` (the first N).

`load_bench` applies them to folders; generated datasets (dragbench.synth, dragbench.toy.samples) apply them
here to their in-memory samples, with the same order (categories, then limit) and the same errors.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from dragbench.sample import DragSample


def check_limit(limit: int | None) -> None:
    """Raise ValueError unless `limit` is None or >= 1."""
    if limit is not None and limit < 1:
        raise ValueError(f"dataset.limit must be >= 1 or null, got {limit}")


def check_categories(
    categories: Sequence[str] | str | None, valid: Sequence[str], source: str
) -> list[str] | None:
    """Normalise `categories` to a list and reject names outside `valid` (listing them and the closest match).

    Args:
        categories: a name, a list of names, or None (= all).
        valid: the category names the dataset can hold.
        source: what the dataset is, for the message (e.g. "the toy world").

    Returns:
        The names as a list, or None.

    Raises:
        ValueError: an unknown name.
    """
    if categories is None:
        return None
    names = [categories] if isinstance(categories, str) else list(categories)
    for name in names:
        if name not in valid:
            match = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.0)
            hint = f"; did you mean {match[0]!r}?" if match else ""
            raise ValueError(
                f"unknown category {name!r} in {source}{hint} Valid categories: {', '.join(valid)} "
                f"(dataset.categories)"
            )
    return names


def select_samples(
    samples: Sequence[DragSample],
    categories: Sequence[str] | str | None,
    limit: int | None,
    valid: Sequence[str],
    source: str,
) -> list[DragSample]:
    """Keep the samples of `categories` (None = all), then the first `limit` of them (None = all).

    Args:
        samples: the dataset, in its order.
        categories: category names to keep; each must be in `valid`.
        limit: how many samples to keep at most (>= 1).
        valid: the category names the dataset can hold.
        source: what the dataset is, for messages (e.g. "synthetic samples (dataset.n=4)").

    Returns:
        The selected samples, in the input order.

    Raises:
        ValueError: limit < 1, an unknown category, or no sample left (names the knob to change).
    """
    check_limit(limit)
    names = check_categories(categories, valid, source)
    chosen = [s for s in samples if names is None or s.category in names]
    if not chosen:
        raise ValueError(
            f"no samples of categories {names} in {source}: raise dataset.n or change dataset.categories"
        )
    return chosen if limit is None else chosen[:limit]
