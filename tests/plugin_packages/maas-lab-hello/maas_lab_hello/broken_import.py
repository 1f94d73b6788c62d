"""A plugin whose import fails, as a plugin with a missing dependency would."""

import maas_lab_hello_missing_dependency  # noqa: F401
