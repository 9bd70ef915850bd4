"""Who may use the service over HTTP, and which files a request may name.

* :func:`parse_address`: ``HOST:PORT`` for ``rlm serve --http``; an address
  other than loopback is refused unless ``any_interface`` (``--http-any-interface``)
  says it is meant.
* :func:`token_matches`: the ``Authorization: Bearer <token>`` header against
  the token of ``rlm service token``, compared in constant time.
* :class:`AllowedRoots`: a path named over HTTP (or by an MCP client the
  roots apply to) must lie under one of the roots the service was started with
  (``--allow-path``; none by default), symlinks resolved before the check, so a
  link inside a root that points out of it is refused too.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from rlm.errors import ConfigError, InputError, RLMError

__all__ = ["AccessDenied", "AllowedRoots", "parse_address", "token_matches"]


class AccessDenied(RLMError):
    """A request named a file outside the roots it may read (HTTP 403)."""


def parse_address(text: str, *, any_interface: bool = False) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT`` (``[::1]:PORT`` for IPv6); raises :class:`ConfigError`."""
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"--http wants HOST:PORT (e.g. 127.0.0.1:8765), not {text!r}")
    if not any_interface and not _is_loopback(host):
        raise ConfigError(f"--http {text} is not a loopback address: anyone who can reach it could run code as "
                          "you; add --http-any-interface if that is meant (the bearer token is always required)")
    return host, int(port_text)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_matches(header: str | None, token: str) -> bool:
    """Whether ``header`` is ``Bearer <token>`` (constant-time comparison)."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


@dataclass(frozen=True)
class AllowedRoots:
    """The directories a request may name files under; ``everything`` for the local user's own clients."""

    roots: tuple[Path, ...] = ()
    everything: bool = False

    @classmethod
    def of(cls, paths: tuple[Path, ...] | list[Path]) -> AllowedRoots:
        """Roots from ``--allow-path`` values (each must be an existing directory)."""
        resolved = []
        for path in paths:
            real = Path(path).expanduser().resolve()
            if not real.is_dir():
                raise ConfigError(f"--allow-path {path}: not a directory")
            resolved.append(real)
        return cls(tuple(resolved))

    def check(self, text: str) -> Path:
        """The real path of ``text`` if a request may read it; raises :class:`AccessDenied` or :class:`InputError`."""
        path = Path(os.path.expanduser(text))
        if not path.is_absolute():
            raise InputError(f"context_path must be an absolute path, not {text!r}")
        real = path.resolve()  # symlinks resolved first: a link out of a root is outside it
        if not self.everything and not any(real == root or root in real.parents for root in self.roots):
            where = ", ".join(str(root) for root in self.roots) or "none (start the service with --allow-path DIR)"
            raise AccessDenied(f"{text} is outside the directories this service may read (allowed: {where})")
        if not real.exists():
            raise InputError(f"no such file or directory: {text}")
        return real
