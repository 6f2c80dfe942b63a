"""Errors that users see: each names the parameter (or the unit of work) and what is allowed."""


class ParameterError(ValueError):
    """A bad parameter value. The message names the parameter, the value and what is allowed."""

    def __init__(self, name: str, value, allowed: str, why: str | None = None):
        self.name, self.value, self.allowed = name, value, allowed
        reason = f" ({why})" if why else ""
        super().__init__(f"parameter '{name}' = {value!r} is not valid{reason}; allowed: {allowed}")


class Unsupported(Exception):
    """A model or method cannot run this point by construction (recorded as a result, not an
    error): e.g. an image side that is not a multiple of the patch size."""


class MissingData(ParameterError):
    """A dataset that is not on this machine: says where it looked and how to install it."""

    def __init__(self, name: str, looked: list, install: str):
        self.looked, self.install = [str(p) for p in looked], install
        ValueError.__init__(self, f"dataset '{name}' not found; looked in: {', '.join(self.looked)}; "
                                  f"install: {install}")
        self.name, self.value, self.allowed = name, None, install
