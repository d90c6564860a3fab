"""Database URL helpers that keep passwords out of output and logs."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

__all__ = ["DEFAULT_DATABASE_URL", "mask_password", "redact"]

#: The local service started by ``make services``; the password-less default
#: keeps credentials out of committed config.
DEFAULT_DATABASE_URL = "postgresql://llmpulse@127.0.0.1:15432/llmpulse"

_MASK = "***"
# key=value conninfo: password=secret or password='se cret' (libpq quoting).
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def mask_password(conninfo: str) -> str:
    """Return ``conninfo`` with any password replaced by ``***``.

    Handles URLs (``postgresql://user:pw@host/db``, also ``?password=``) and
    libpq ``key=value`` strings.

    Parameters
    ----------
    conninfo
        A PostgreSQL connection URL or ``key=value`` string.

    Returns
    -------
    str
        The same connection string, safe to print.

    Examples
    --------
    >>> mask_password("postgresql://llmpulse:s3cret@127.0.0.1:15432/llmpulse")
    'postgresql://llmpulse:***@127.0.0.1:15432/llmpulse'
    >>> mask_password("host=db user=app password='a b' dbname=x")
    'host=db user=app password=*** dbname=x'
    >>> mask_password("postgresql://llmpulse@127.0.0.1/llmpulse")
    'postgresql://llmpulse@127.0.0.1/llmpulse'
    """
    if "://" not in conninfo:
        return _KV_PASSWORD.sub(lambda m: m.group(1) + _MASK, conninfo)
    parts = urlsplit(conninfo)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostinfo = netloc.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{_MASK}@{hostinfo}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() == "password" for k, _ in pairs):
            query = urlencode(
                [(k, _MASK if k.lower() == "password" else v) for k, v in pairs], safe="*"
            )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _passwords(conninfo: str) -> list[str]:
    found: list[str] = []
    if "://" in conninfo:
        parts = urlsplit(conninfo)
        if parts.password:
            found += [parts.password, unquote(parts.password)]
        found += [v for k, v in parse_qsl(parts.query) if k.lower() == "password"]
    else:
        for m in _KV_PASSWORD.finditer(conninfo):
            value = m.group(2)
            found += [value, value.strip("'")]
    return [p for p in found if p]


def redact(text: str, conninfo: str) -> str:
    """Remove the password of ``conninfo`` from an arbitrary message.

    Driver errors may echo parts of the connection string; this is a last
    line of defence before a message is printed.

    Parameters
    ----------
    text
        The message to clean, e.g. ``str(exc)``.
    conninfo
        The connection string whose password must not appear.

    Returns
    -------
    str
        ``text`` with every occurrence of the password replaced by ``***``.

    Examples
    --------
    >>> redact("auth failed for s3cret", "postgresql://u:s3cret@h/db")
    'auth failed for ***'
    """
    for secret in sorted(set(_passwords(conninfo)), key=len, reverse=True):
        text = text.replace(secret, _MASK)
    return text
