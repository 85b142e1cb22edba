"""Errors shared by the core's modules (a leaf: it imports nothing of Persona's)."""


class SettingsError(ValueError):
    """An invalid setting or settings file: the message names the setting, never a secret."""
