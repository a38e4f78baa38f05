"""Denoising methods, one class each, registered by name (see :mod:`nlfilt.methods.base`).

The built-in ones: 'collaborative' (the default) and 'filter'.  A new method
is a module of its own with a registered :class:`Method` subclass, imported
below, and its tests.
"""

from nlfilt.methods.base import Method, Plan, make_plan, method, method_names, register_method
from nlfilt.methods.collaborative_method import CollaborativeMethod
from nlfilt.methods.filter_method import FilterMethod

__all__ = ["CollaborativeMethod", "FilterMethod", "Method", "Plan", "make_plan", "method", "method_names",
           "register_method"]
