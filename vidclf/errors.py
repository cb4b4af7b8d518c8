"""One base class for the errors users cause, so the CLI can tell them from bugs."""


class VidclfError(Exception):
    """An error with a message fit for the user: the CLI prints it as one line, no traceback."""


class DatasetError(VidclfError):
    """The dataset folder or manifest cannot be used as given."""


class CheckpointError(VidclfError):
    """A file is not a vidclf checkpoint, or one this version cannot read."""


class WriteError(VidclfError):
    """A file could not be written (a full disk, a read-only folder, no permission)."""

    def __init__(self, path: object, err: OSError):
        super().__init__(f"{path}: cannot write: {err.strerror or err}")
        self.errno = err.errno
