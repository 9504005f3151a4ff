"""``engram-voice check``: the v2 verification procedure, in plain words for operators.

It resolves the configured credential (API key, Key Vault secret or Microsoft Entra ID),
mints one ephemeral key per configured endpoint with the first agent's session, and says
what it used (endpoint host, deployment, credential kind, key version) and what happened
(latency, or the failure with its likely fix). It never prints a key or a token.

Exit codes: 0 every endpoint minted; 2 invalid configuration (printed by the CLI);
3 the service's own credential could not be obtained (Key Vault, Entra ID); 4 Azure
refused the credential (401/403); 5 Azure rejected the request (404 deployment, region
without the model, 400); 6 Azure could not be reached, timed out, throttled or failed.
"""

from __future__ import annotations

import time
from typing import Any, Final, TextIO
from urllib.parse import urlsplit

import aiohttp

from engram_voice.agents import load_catalog
from engram_voice.credentials import CredentialSource
from engram_voice.credentials.factory import build_credential_source
from engram_voice.errors import (
    AppError,
    ConfigurationError,
    CredentialTimeoutError,
    CredentialUnavailableError,
    UpstreamAuthError,
    UpstreamRejectedError,
    UpstreamThrottledError,
)
from engram_voice.realtime.endpoints import EndpointPool
from engram_voice.realtime.session_config import client_secret_request
from engram_voice.realtime.settings import RealtimeSettings
from engram_voice.realtime.upstream import UpstreamMinter

__all__ = [
    "EXIT_CREDENTIAL",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_REJECTED",
    "EXIT_UNREACHABLE",
    "run_check",
]

EXIT_OK: Final = 0
EXIT_CREDENTIAL: Final = 3
EXIT_REFUSED: Final = 4
EXIT_REJECTED: Final = 5
EXIT_UNREACHABLE: Final = 6
_REALTIME_REGIONS = "East US 2 or Sweden Central"
_OUTCOME_WORDS = {
    "connect_error": "could not be reached (connection failed)",
    "timeout": "did not answer in time",
    "throttled": "is throttling (429)",
    "bad_answer": "answered with an unreadable body",
}


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _credential_words(described: dict[str, Any]) -> str:
    kind = described.get("kind")
    if kind == "key-vault":
        return (
            f"key-vault (vault {described['vault']}, secret {described['secret_name']}, "
            f"identity {described['identity']})"
        )
    if kind == "entra":
        return f"entra (Microsoft Entra ID token, identity {described['identity']})"
    return "api-key (AZURE_OPENAI_API_KEY)"


def _ready_words(described: dict[str, Any], elapsed_ms: int) -> str:
    if described.get("kind") == "key-vault":
        return (
            f"  key version {described['version']} (created {described['version_created_at']}, "
            f"fetched {described['fetched_at']}), ready in {elapsed_ms} ms"
        )
    return f"  ready in {elapsed_ms} ms"


def _credential_fix(kind: str, *, timed_out: bool) -> str:
    if kind == "entra" and timed_out:
        return (
            "the managed identity did not answer in time: check that AZURE_CLIENT_ID names a "
            "user-assigned identity attached to this app (or that the system-assigned identity "
            "is on); CREDENTIAL_TIMEOUT_SECONDS bounds the wait."
        )
    if kind == "entra":
        return "check that AZURE_CLIENT_ID names an identity attached to this app."
    return "the line above names the cause; docs/operations.md (Troubleshooting) has the fixes."


def _refused_fix(kind: str, settings: RealtimeSettings) -> str:
    if kind == "entra":
        return (
            "grant the identity the 'Cognitive Services OpenAI User' role on this Azure OpenAI "
            "resource (role assignments take a few minutes to apply)."
        )
    if kind == "key-vault":
        return (
            f"the key in secret '{settings.key_vault_secret_name}' is not a current key of this "
            "resource: copy key 1 or key 2 from the resource's 'Keys and Endpoint' page into a "
            "new version of the secret (docs/operations.md, Rotate keys)."
        )
    return (
        "AZURE_OPENAI_API_KEY is not a current key of this resource: copy key 1 or key 2 from "
        "the resource's 'Keys and Endpoint' page (and check the endpoint is the right resource)."
    )


def _rejected_fix(outcome: str | None, settings: RealtimeSettings) -> str:
    if outcome == "http_404":
        return (
            f"this resource has no deployment named '{settings.deployment}': set "
            "AZURE_OPENAI_DEPLOYMENT to the deployment name shown in the Foundry portal. If the "
            f"resource's region does not offer gpt-realtime ({_REALTIME_REGIONS}), the "
            "deployment cannot exist there: use a resource in a supported region."
        )
    return (
        f"check that '{settings.deployment}' is a gpt-realtime deployment (not a chat model) "
        "and that the agent catalog's voice and transcription settings are valid."
    )


def _unreachable_fix(error: AppError, outcome: str | None) -> str:
    if isinstance(error, UpstreamThrottledError):
        return "the deployment is at its rate limit: try again shortly or raise its quota."
    if outcome == "connect_error":
        return (
            "check the URL in AZURE_OPENAI_ENDPOINTS (https://<resource>.openai.azure.com), "
            "DNS, and that the network (private endpoint, firewall) lets this app reach it."
        )
    if outcome == "timeout":
        return (
            "Azure did not answer within UPSTREAM_TIMEOUT_SECONDS: check the network path; "
            "a hang here usually means a firewall dropping packets."
        )
    return "Azure failed on its side: try again later and check Azure status for the region."


class _Check:
    """One run of the procedure, writing plain lines to ``out``."""

    def __init__(self, settings: RealtimeSettings, out: TextIO) -> None:
        self.settings = settings
        self.out = out

    def say(self, line: str = "") -> None:
        """Write one line."""
        self.out.write(line + "\n")
        self.out.flush()

    def fail(self, code: int, what: str, fix: str) -> int:
        """Write a failure and its fix, and return ``code``."""
        self.say(f"  FAILED: {what}")
        self.say(f"  fix:    {fix}")
        return code

    async def credential(self, source: CredentialSource) -> int:
        """Start the source and obtain one credential, reporting what was used."""
        kind = source.kind
        self.say(f"credential: {_credential_words(source.describe())}")
        started = time.monotonic()
        try:
            await source.start()
            await source.get()
        except ConfigurationError as exc:
            return self.fail(EXIT_CREDENTIAL, str(exc), _credential_fix(kind, timed_out=False))
        except CredentialUnavailableError as exc:
            timed_out = isinstance(exc, CredentialTimeoutError)
            return self.fail(
                EXIT_CREDENTIAL, exc.detail, _credential_fix(kind, timed_out=timed_out)
            )
        self.say(_ready_words(source.describe(), _ms(started)))
        return EXIT_OK

    async def endpoint(
        self, url: str, source: CredentialSource, http: aiohttp.ClientSession
    ) -> int:
        """Mint one key at ``url`` and report the outcome."""
        settings = self.settings
        pool = EndpointPool((url,), failure_threshold=1, cooldown_seconds=0.0)
        minter = UpstreamMinter(
            session=http,
            credentials=source,
            pool=pool,
            request_timeout=settings.request_timeout,
            connect_timeout=settings.connect_timeout,
            deadline=settings.deadline,
        )
        agent = load_catalog(settings.agents_file).all()[0]
        payload = client_secret_request(
            agent, deployment=settings.deployment, ttl_seconds=settings.key_ttl_seconds
        )
        host = urlsplit(url).netloc
        self.say(f"endpoint: {host} (agent {agent.id})")
        started = time.monotonic()
        try:
            minted = await minter.mint(payload)
        except AppError as exc:
            outcome = pool.describe()[0]["last_outcome"]
            return self.fail(*self._classify(exc, host, outcome, source.kind))
        expires_in = max(0, minted.expires_at - int(time.time()))
        self.say(
            f"  OK: minted an ephemeral key in {_ms(started)} ms "
            f"(expires in {expires_in} s; the key is not shown)"
        )
        return EXIT_OK

    def _classify(
        self, exc: AppError, host: str, outcome: str | None, kind: str
    ) -> tuple[int, str, str]:
        settings = self.settings
        if isinstance(exc, UpstreamAuthError):
            return EXIT_REFUSED, exc.detail, _refused_fix(kind, settings)
        if isinstance(exc, UpstreamRejectedError):
            return EXIT_REJECTED, exc.detail, _rejected_fix(outcome, settings)
        if isinstance(exc, CredentialUnavailableError):
            timed_out = isinstance(exc, CredentialTimeoutError)
            return EXIT_CREDENTIAL, exc.detail, _credential_fix(kind, timed_out=timed_out)
        fallback = (
            f"failed with HTTP {outcome[5:]}" if outcome and outcome.startswith("http_") else None
        )
        words = _OUTCOME_WORDS.get(outcome or "") or fallback or f"failed ({exc.code})"
        return EXIT_UNREACHABLE, f"Azure OpenAI at {host} {words}.", _unreachable_fix(exc, outcome)


async def run_check(
    settings: RealtimeSettings, *, out: TextIO, credentials: CredentialSource | None = None
) -> int:
    """Verify the credential and mint once per endpoint; return the exit code (0 = all good)."""
    check = _Check(settings, out)
    check.say("engram-voice check: realtime token vending (Azure OpenAI GA protocol)")
    check.say(f"deployment: {settings.deployment}")
    source = credentials or build_credential_source(settings)
    try:
        code = await check.credential(source)
        if code != EXIT_OK:
            check.say(f"result: FAILED (exit {code})")
            return code
        timeout = aiohttp.ClientTimeout(
            total=settings.request_timeout, sock_connect=settings.connect_timeout
        )
        async with aiohttp.ClientSession(timeout=timeout) as http:
            codes = [await check.endpoint(url, source, http) for url in settings.endpoints]
    finally:
        await source.aclose()
    failed = [c for c in codes if c != EXIT_OK]
    if failed:
        check.say(f"result: FAILED on {len(failed)} of {len(codes)} endpoint(s) (exit {failed[0]})")
        return failed[0]
    check.say(f"result: OK, {len(codes)} of {len(codes)} endpoint(s) minted")
    return EXIT_OK
