"""Deprecated (kept for one release): this module is now `registry.pyfunc_model`."""

import warnings

from registry.pyfunc_model import *  # noqa: F403

warnings.warn(
    "registry.m3_pyfunc is deprecated: import registry.pyfunc_model", DeprecationWarning, stacklevel=2
)
