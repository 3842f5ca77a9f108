"""User-facing errors. Every message is one line: what was expected, what was found, what to do."""


class XaitfError(Exception):
    """Base class for errors caused by input, settings or models the user supplied."""


class InputError(XaitfError, ValueError):
    """Bad image/array input: wrong shape, channels, dtype or non-finite values."""


class ModelError(XaitfError, ValueError):
    """A model that a method cannot handle (missing layer, unsupported layer, bad file)."""


class MethodError(XaitfError, KeyError):
    """Unknown method name or invalid method parameter."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(XaitfError, FileNotFoundError):
    """Dataset files missing or malformed."""
