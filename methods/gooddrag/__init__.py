"""GoodDrag (Zhang et al., ICLR 2025) behind the harness protocol (protocol §7)."""

from methods.gooddrag.method import GoodDrag

__all__ = ["GoodDrag"]
