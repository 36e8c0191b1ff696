"""The one exception a user sees as a clean message."""


class CharLMError(Exception):
    """A problem with the user's input, files or options.

    The CLI prints ``str(error)`` as a single line on stderr and exits with status 1;
    no traceback. Library code raises it for anything a user can fix.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
