"""The service's credentials, as the capture process gets them: over the pipe, never otherwise.

The service owns every credential (the api-key, its Key Vault rotation, Entra tokens).
The capture process is started without any of them in its environment
(:func:`child_environment`) and asks for the upstream credential at each connect;
:class:`CredentialRelay` answers, and takes back a refused one by the token it gave.
"""

from __future__ import annotations

import itertools
import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from engram_voice.credentials import CredentialSource, UpstreamCredential

__all__ = ["CredentialRelay", "child_environment"]

MAX_TOKENS = 64
"""Distinct credentials remembered (old rotations age out)."""
_SECRET_NAME = re.compile(
    r"KEY|SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|DSN|CONNECTION_STRING", re.IGNORECASE
)
_URL_PASSWORD = re.compile(r"://[^/@\s]*:[^/@\s]*@")


def child_environment(environ: Mapping[str, str] | os._Environ[str]) -> dict[str, str]:
    """Return ``environ`` without what could carry a secret (the capture process needs none).

    No variable named like a key, secret, password, token, credential or connection
    string, and no value with a password in a URL, is passed on.
    """
    return {
        name: value
        for name, value in environ.items()
        if _SECRET_NAME.search(name) is None and _URL_PASSWORD.search(value) is None
    }


class CredentialRelay:
    """Answers the capture process's ``credential`` and ``invalidate`` requests."""

    def __init__(self, credentials: CredentialSource) -> None:
        self._credentials = credentials
        self._tokens: OrderedDict[int, UpstreamCredential] = OrderedDict()
        self._token_of: dict[tuple[str, str, str | None, Any], int] = {}
        self._ids = itertools.count(1)

    async def get(self) -> list[Any]:
        """Return the current credential as the wire carries it, with its token."""
        credential = await self._credentials.get()
        return [
            credential.header,
            credential.secret.reveal(),
            credential.kind,
            credential.version,
            self._token(credential),
        ]

    async def invalidate(self, token: int) -> bool:
        """Report the credential given with ``token`` refused; True when there is another."""
        used = self._tokens.get(token)
        return used is not None and await self._credentials.invalidate(used)

    def _token(self, credential: UpstreamCredential) -> int:
        """One token per distinct credential (not per request).

        So a burst of connects never pushes out the one a refused sideband is about to
        report.
        """
        key = (credential.header, credential.kind, credential.version, credential.secret)
        token = self._token_of.get(key)
        if token is None:
            token = next(self._ids)
            self._token_of[key] = token
            self._tokens[token] = credential
            while len(self._tokens) > MAX_TOKENS:  # old rotations
                _, old = self._tokens.popitem(last=False)
                self._token_of.pop((old.header, old.kind, old.version, old.secret), None)
        self._tokens.move_to_end(token)
        return token
