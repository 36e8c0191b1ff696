"""The one exception a user sees as a clean message."""


class CharLMError(Exception):
    """A problem with the user's input, files or options.

    The CLI prints ``str(error)`` as a single line on stderr and exits with status 1;
    no traceback. Library code raises it for anything a user can fix.
    """


class ProcessError(CharLMError):
    """A problem of one process among those that train a run together (its GPU, its memory):
    shown by that process whatever its rank, where the others' errors, the same as the main
    process's, are left to it."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class TooLargeToCount(CharLMError):
    """Model sizes whose tensors torch cannot even describe: more than ``at_least``
    parameters."""

    at_least = 2**61  # a tensor's bytes (4 per float32) must fit in a signed 64-bit integer

    def __init__(self):
        super().__init__(f"these sizes describe a model of more than {self.at_least:,} "
                         f"parameters; use a smaller --hidden, --layers or --embed")
