"""Errors shared by the core's modules (a leaf: it imports nothing of Persona's)."""


class SettingsError(ValueError):
    """An invalid setting or settings file: the message names the setting, never a secret."""


class BrokerUnavailable(RuntimeError):
    """The broker could not take a record (unreachable, or it refused it): nothing was produced
    by that call, so the caller may send it again. The message is the Kafka client's."""
