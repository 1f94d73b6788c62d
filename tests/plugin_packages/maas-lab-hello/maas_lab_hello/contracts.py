"""Plugins written for other versions of the plugin contract, refused at load: one for an
older major version, one for a newer minor version, one that declares nothing. Each entry
point names one instance below (``module:attribute``)."""

from maas_lab import Component, hookimpl


class _Plugin:
    @hookimpl
    def maas_evaluators(self, register):
        register(Component(name=self.NAME, description="never loaded", run=lambda s, c: []))


class OldMajor(_Plugin):
    MAAS_LAB_CONTRACT = "0.4"
    NAME = "old-major"


class NewerMinor(_Plugin):
    MAAS_LAB_CONTRACT = "1.9"
    NAME = "newer-minor"


class Undeclared(_Plugin):
    NAME = "undeclared"


old_major, newer_minor, undeclared = OldMajor(), NewerMinor(), Undeclared()
