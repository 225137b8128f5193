"""Renderers: one per output format, behind ``interface.Renderer``."""
