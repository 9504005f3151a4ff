"""``engram-voice check``: the v2 verification procedure, in plain words for operators.

For each configured upstream it resolves the credential (API key, Key Vault secret or
Microsoft Entra ID) and proves it works: Azure OpenAI mints one ephemeral key per endpoint
with the first agent's session; Azure AI Voice Live opens the WebRTC control channel and
offers the agent's session, without placing a call (:mod:`.check_voicelive`). It says what
it used (host, deployment or model and api-version, credential kind, key version) and what
happened (latency, or the failure with its likely fix). It never prints a key or a token.

Exit codes (the first failure's): 0 every check passed; 2 invalid configuration (printed
by the CLI); 3 the service's own credential could not be obtained (Key Vault, Entra ID);
4 Azure refused the credential (401/403); 5 Azure rejected the request (404 deployment,
api-version or resource, region without the model, 400); 6 Azure could not be reached,
timed out, throttled or failed.
"""

from __future__ import annotations

import time
from typing import Any, Final, TextIO
from urllib.parse import urlsplit

import aiohttp

from engram_voice.agents import Agent, AgentCatalog
from engram_voice.agents.upstreams import AZURE_OPENAI, VOICE_LIVE
from engram_voice.credentials import CredentialSource
from engram_voice.credentials.factory import (
    build_credential_source,
    build_voicelive_credential_source,
)
from engram_voice.errors import (
    AppError,
    ConfigurationError,
    CredentialTimeoutError,
    CredentialUnavailableError,
    UpstreamAuthError,
    UpstreamRejectedError,
    UpstreamThrottledError,
)
from engram_voice.realtime.check_voicelive import check_voicelive
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


def _credential_words(described: dict[str, Any], api_key_setting: str) -> str:
    kind = described.get("kind")
    if kind == "key-vault":
        return (
            f"key-vault (vault {described['vault']}, secret {described['secret_name']}, "
            f"identity {described['identity']})"
        )
    if kind == "entra":
        return f"entra (Microsoft Entra ID token, identity {described['identity']})"
    return f"api-key ({api_key_setting})"


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

    async def credential(self, source: CredentialSource, api_key_setting: str) -> int:
        """Start the source and obtain one credential, reporting what was used."""
        kind = source.kind
        self.say(f"credential: {_credential_words(source.describe(), api_key_setting)}")
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
        self, url: str, source: CredentialSource, http: aiohttp.ClientSession, agent: Agent
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


def _agent_for(catalog: AgentCatalog, upstream: str) -> Agent | None:
    """Return the first agent ``upstream`` serves, else the first with a voice for it."""
    agents = catalog.all()
    served = [a for a in agents if a.upstream == upstream]
    voiced = [a for a in agents if a.voices.name_for(upstream)]
    found = served or voiced
    return found[0] if found else None


async def _azure_openai(check: _Check, source: CredentialSource, agent: Agent | None) -> list[int]:
    """Check Azure OpenAI: the credential, then one mint per endpoint."""
    settings = check.settings
    check.say("Azure OpenAI (ephemeral keys, GA protocol)")
    check.say(f"deployment: {settings.deployment}")
    code = await check.credential(source, "AZURE_OPENAI_API_KEY")
    if code != EXIT_OK or agent is None:
        return [code]
    timeout = aiohttp.ClientTimeout(
        total=settings.request_timeout, sock_connect=settings.connect_timeout
    )
    async with aiohttp.ClientSession(timeout=timeout) as http:
        return [await check.endpoint(url, source, http, agent) for url in settings.endpoints]


async def _voice_live(check: _Check, source: CredentialSource, agent: Agent | None) -> list[int]:
    """Check Voice Live: the credential, the control channel, the agent's session."""
    voicelive = check.settings.voicelive
    assert voicelive is not None  # noqa: S101 - only called when configured
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=voicelive.connect_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        return [await check_voicelive(check, voicelive, source, agent, http)]


def _summary(settings: RealtimeSettings, codes: list[int], voicelive_ok: bool) -> str:
    failed = [c for c in codes if c != EXIT_OK]
    if failed:
        return f"result: FAILED on {len(failed)} of {len(codes)} endpoint(s) (exit {failed[0]})"
    parts = []
    if settings.azure_openai_configured:
        minted = len(settings.endpoints)
        parts.append(f"{minted} of {minted} endpoint(s) minted")
    if voicelive_ok:
        parts.append("Voice Live control channel opened")
    return "result: OK, " + "; ".join(parts)


async def run_check(
    settings: RealtimeSettings,
    *,
    out: TextIO,
    credentials: CredentialSource | None = None,
    voicelive_credentials: CredentialSource | None = None,
) -> int:
    """Verify every configured upstream; return the first failure's exit code (0 = all good).

    Azure OpenAI is checked when ``AZURE_OPENAI_ENDPOINTS`` is set, Voice Live when
    ``AZURE_VOICELIVE_ENDPOINT`` is; a failure of one does not skip the other.
    """
    check = _Check(settings, out)
    upstreams = " and ".join(
        name
        for name, on in (
            ("Azure OpenAI", settings.azure_openai_configured),
            ("Azure AI Voice Live", settings.voicelive is not None),
        )
        if on
    )
    check.say(f"engram-voice check: realtime upstreams: {upstreams}")
    try:
        catalog = settings.load_catalog()
    except ConfigurationError as exc:  # the CLI checks the file; this is a safety net
        check.say(f"  FAILED: {exc}")
        return 2
    codes: list[int] = []
    voicelive_codes: list[int] = []
    if settings.azure_openai_configured:
        source = credentials or build_credential_source(settings)
        try:
            codes += await _azure_openai(check, source, _agent_for(catalog, AZURE_OPENAI))
        finally:
            await source.aclose()
    if settings.voicelive is not None:
        if codes:
            check.say()
        vl_source = voicelive_credentials or build_voicelive_credential_source(settings.voicelive)
        try:
            voicelive_codes = await _voice_live(check, vl_source, _agent_for(catalog, VOICE_LIVE))
        finally:
            await vl_source.aclose()
        codes += voicelive_codes
    summary = _summary(settings, codes, voicelive_ok=voicelive_codes == [EXIT_OK])
    check.say(summary)
    return next((c for c in codes if c != EXIT_OK), EXIT_OK)
