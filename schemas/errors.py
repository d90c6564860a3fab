"""The one error type the codec raises for bad data."""

from __future__ import annotations

__all__ = ["SerializationError"]


class SerializationError(ValueError):
    """A message could not be encoded or decoded.

    Raised for bad data only (poison messages: dead-letter them and move on),
    never for programming errors such as an unknown record name.

    Parameters
    ----------
    reason
        What is wrong, without the field path.
    field
        Dotted path of the offending field, rooted at the record name, e.g.
        ``"span.start_time"`` or ``"span.attributes[model]"``; None when the
        problem is the message as a whole (e.g. unknown wire format).

    Examples
    --------
    >>> err = SerializationError("required field missing", field="span.trace_id")
    >>> str(err)
    'span.trace_id: required field missing'
    >>> err.field, err.reason
    ('span.trace_id', 'required field missing')
    >>> isinstance(err, ValueError)
    True
    """

    def __init__(self, reason: str, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)

    def __reduce__(self):
        # Exceptions cross process boundaries (multiprocessing workers, faust
        # tables); the default pickling would call __init__ with the message only.
        return (type(self), (self.reason, self.field))
