from .resolver import resolve

__all__ = ["resolve"]
