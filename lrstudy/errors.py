class UserInputError(Exception):
    """A mistake in what the user gave us: printed as one line, exit code 2, no traceback."""
