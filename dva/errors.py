"""Project exceptions. Each names the input at fault and says what to do about it."""


class DvaError(Exception):
    """Base class of every error dva raises on purpose.

    Errors cross process boundaries (Ray carries an actor's or task's exception to the driver by pickling it), so
    they pickle as their message and attributes, whatever a subclass's `__init__` takes; the default would call
    `__init__(*args)` with the one formatted message and fail for subclasses that take other arguments.
    """

    def __reduce__(self):
        return _restore, (type(self), self.args, self.__dict__)


def _restore(cls: type, args: tuple, state: dict) -> DvaError:
    err = cls.__new__(cls, *args)
    err.args = args
    err.__dict__.update(state)
    return err


class ConfigError(DvaError):
    """A configuration value is unknown, of the wrong type, or inconsistent."""


class MissingWeightsError(DvaError):
    """A pretrained weight file is missing or malformed.

    The message names the file, the config key that points at it and, where useful, the expected format.
    """

    def __init__(self, path: str, config_key: str, detail: str = ""):
        self.path = path
        self.config_key = config_key
        msg = f"weights file {path!r} (config key `{config_key}`)"
        msg += f": {detail}" if detail else " does not exist"
        msg += f". Point `{config_key}` at a local path or s3:// URI of the file."
        super().__init__(msg)


class VideoError(DvaError):
    """A video cannot be read or written (empty, corrupt, not a video, unsupported)."""


class NoFaceError(DvaError):
    """A video has no usable face track (no face, or too few frames with a detected face)."""


class StorageError(DvaError):
    """An object store or local path cannot be reached or written."""
