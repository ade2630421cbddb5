"""Drag-editing methods behind one protocol: `DragMethod.edit(sample) -> EditResult`."""

from methods.base import DragMethod, EditResult

__all__ = ["DragMethod", "EditResult"]
