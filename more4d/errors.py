"""User-facing errors.

`InputError` is raised for any mistake a user can fix (bad file, bad argument, missing weights).
It subclasses `ValueError` so library callers can catch it generically; the CLI prints its message
on one line without a traceback, and the app shows it as a `gr.Error`.
"""


class InputError(ValueError):
    """A problem with user input: the message names the argument, what was expected and what was received."""
