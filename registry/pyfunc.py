"""Deprecated (kept for one release): this module is now `registry.log_model`."""

import warnings

from registry.log_model import *  # noqa: F403

warnings.warn("registry.pyfunc is deprecated: import registry.log_model", DeprecationWarning, stacklevel=2)
