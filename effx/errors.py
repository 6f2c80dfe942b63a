"""Errors that users see: each names the parameter and what is allowed."""


class ParameterError(ValueError):
    """A bad parameter value. The message names the parameter, the value and what is allowed."""

    def __init__(self, name: str, value, allowed: str, why: str | None = None):
        self.name, self.value, self.allowed = name, value, allowed
        reason = f" ({why})" if why else ""
        super().__init__(f"parameter '{name}' = {value!r} is not valid{reason}; allowed: {allowed}")
