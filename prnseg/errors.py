"""User-facing errors: one line naming the thing that is wrong and the fix."""


class PrnsegError(Exception):
    """Base class for errors the CLI prints as a single line (no traceback)."""


class DatasetError(PrnsegError):
    """A dataset root, image or label is missing, unreadable or inconsistent."""


class ImageReadError(PrnsegError):
    """An image file cannot be decoded; the message names the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ConfigError(PrnsegError):
    """A config file or override is invalid."""
