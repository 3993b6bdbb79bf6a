"""Errors that end a diagnosis with exit code 2 instead of a traceback."""


class InputError(Exception):
    """Bad input or usage. The message is one line that names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
