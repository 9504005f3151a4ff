"""Keep ``infra/`` (Bicep) and the Dockerfile honest against the code, offline.

No Bicep compiler can be installed on the development machines (it ships as a .NET binary
downloaded from GitHub), so every template is parsed with ``pycep-parser`` (a Lark grammar
of Bicep) and the parsed form is checked: module wiring, the parameters file, and the
Container App's environment evaluated for every mode and fed to ``Settings.from_env``.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from engram_voice.app import create_app
from engram_voice.auth import AUTH_MODES
from engram_voice.envreader import EnvReader
from engram_voice.memory import MemorySettings
from engram_voice.memory.cli import _worker_settings
from engram_voice.realtime.check_voicelive import VOICELIVE_WEBRTC_REGIONS
from engram_voice.realtime.settings import AUTH_CHOICES, DEFAULT_KEY_VAULT_SECRET_NAME
from engram_voice.realtime.voicelive_settings import (
    DEFAULT_VOICELIVE_API_VERSION,
    DEFAULT_VOICELIVE_SECRET_NAME,
    REFUSED_API_VERSIONS,
)
from engram_voice.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
CONTAINER_APP = INFRA / "modules" / "containerapp.bicep"
WORKER_APP = INFRA / "modules" / "workerapp.bicep"
POSTGRES = INFRA / "modules" / "postgres.bicep"

# Built-in role definition ids (the same in every Azure tenant).
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
KEY_VAULT_SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
COGNITIVE_SERVICES_OPENAI_USER = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
# Voice Live with Entra ID: "Azure built-in roles for AI + machine learning" on learn.microsoft.com.
COGNITIVE_SERVICES_USER = "a97b65f3-24c7-4388-baec-2e87135dc908"
FOUNDRY_USER = "53ca6127-db72-4b80-b1b0-d745d6d5456d"  # formerly "Azure AI User"
WELL_KNOWN_ROLES = {
    KEY_VAULT_SECRETS_USER,
    KEY_VAULT_SECRETS_OFFICER,
    COGNITIVE_SERVICES_OPENAI_USER,
    ACR_PULL,
    COGNITIVE_SERVICES_USER,
    FOUNDRY_USER,
}
# Voice Live WebRTC regions (contracts/voice-live-webrtc.md §3): both published lists.
WEBRTC_REGIONS = {
    "australiaeast",
    "centralindia",
    "eastus2",
    "italynorth",
    "japaneast",
    "koreacentral",
    "northcentralus",
    "uksouth",
    "westus2",
} | {"brazilsouth", "centralus", "japanwest", "southcentralus", "westus"}
VOICELIVE_ENDPOINT = "https://ai-engramvoice-x.services.ai.azure.com"

# Values the Container App module receives from other modules at deploy time, in the shape
# Azure gives them (the vault URI ends with a slash; ids are GUIDs).
MODULE_INPUTS = {
    "location": "eastus2",
    "environmentName": "cae-engramvoice",
    "appName": "ca-engramvoice",
    "workspaceName": "log-engramvoice-x",
    "identityId": "/subscriptions/0/resourceGroups/rg/providers/"
    "Microsoft.ManagedIdentity/userAssignedIdentities/id-engramvoice",
    "identityClientId": "11111111-2222-3333-4444-555555555555",
    "image": "example.azurecr.io/engram-voice:0.1.0",
    "openAiEndpoints": "https://ai-engramvoice-x.openai.azure.com",
    "openAiDeployment": "gpt-realtime",
    "keyVaultUri": "https://kv-x.vault.azure.net/",
    "entraTenantId": "66666666-7777-8888-9999-000000000000",
    "entraAudience": "api://engram-voice",
    "corsAllowOrigins": "https://swa-engramvoice-x.azurestaticapps.net",
    "storageAccountName": "stx",
    "shareName": "memory-queue",
    "postgresHost": "psql-engramvoice-x.postgres.database.azure.com",
    "postgresDatabase": "engram_voice",
    "postgresUser": "id-engramvoice",
}
# Stand-ins for the values Container Apps resolves from Key Vault secret references.
SECRET_VALUES = {
    "memory-token-keys": "k1:" + "0" * 64,
    "azure-openai-api-key": "placeholder-azure-openai-key",
    "zep-api-key": "placeholder-zep-key",
    "voicelive-api-key": "placeholder-voicelive-key",
}


@functools.cache
def _parse(path: Path) -> dict[str, Any]:
    """Return pycep's parsed form of one Bicep file."""
    parsed: dict[str, Any] = BicepParser().parse(file_path=path)
    return parsed


def _bicep_files() -> list[Path]:
    """Return every Bicep file under infra/."""
    return sorted(INFRA.rglob("*.bicep"))


def _walk(node: Any) -> Iterator[Any]:
    """Yield every node of a parsed expression tree."""
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _config(resource: Mapping[str, Any]) -> dict[str, Any]:
    """Return a parsed resource's body, unwrapping ``if (condition)``."""
    config: dict[str, Any] = resource["config"]
    return config["config"] if "condition" in config else config


def _has_default(param: Mapping[str, Any]) -> bool:
    """Return True when a parsed parameter declares a default value."""
    return param.get("default") is not None


def _allowed(param: Mapping[str, Any]) -> list[Any] | None:
    """Return a parameter's ``@allowed`` values, or None."""
    for decorator in param.get("decorators", []):
        if decorator["type"] == "allowed":
            return list(decorator["argument"])
    return None


def _is_secure(param: Mapping[str, Any]) -> bool:
    """Return True when a parameter is ``@secure()``."""
    return any(d["type"] == "secure" for d in param.get("decorators", []))


class TemplateFailedError(Exception):
    """The template's ``fail()`` was evaluated: the deployment would stop with this message."""


class _Scope:
    """Evaluates the subset of Bicep expressions the env and secret lists use."""

    def __init__(self, parsed: Mapping[str, Any], params: Mapping[str, Any]) -> None:
        self._vars = {name: var["value"] for name, var in parsed.get("variables", {}).items()}
        self._params: dict[str, Any] = {}
        for name, param in parsed["parameters"].items():
            if name in params:
                self._params[name] = params[name]
            elif _has_default(param) and not isinstance(param["default"], dict):
                self._params[name] = param["default"]

    def name(self, identifier: str) -> Any:
        """Return the value of a parameter or variable."""
        if identifier in self._params:
            return self._params[identifier]
        if identifier in self._vars:
            return self.eval(self._vars[identifier])
        raise KeyError(f"no value for {identifier!r}: add it to MODULE_INPUTS")

    def is_name(self, text: str) -> bool:
        """Return True when ``text`` names a parameter or variable (pycep drops quotes)."""
        return text in self._params or text in self._vars

    def eval(self, node: Any) -> Any:  # noqa: PLR0911 - one branch per expression kind
        """Evaluate one parsed expression."""
        if isinstance(node, str):
            if self.is_name(node):
                return self.name(node)
            return re.sub(r"\$\{(\w+)\}", lambda m: str(self.name(m.group(1))), node)
        if isinstance(node, list):
            return [self.eval(item) for item in node]
        if isinstance(node, dict) and "function" in node:
            return self._function(node["function"])
        if isinstance(node, dict) and "operator" in node:
            return self._operator(node["operator"])
        if isinstance(node, dict):
            return {key.strip("'"): self.eval(value) for key, value in node.items()}
        return node

    def _function(self, function: Mapping[str, Any]) -> Any:
        args = [self.eval(arg) for arg in function.get("parameters", {}).values()]
        match function["type"]:
            case "string":
                return str(args[0]).lower() if isinstance(args[0], bool) else str(args[0])
            case "concat":
                return [item for arg in args for item in arg]
            case "empty":
                return not args[0]
            case "min":
                return min(args)
            case "contains":
                return args[1] in args[0]
            case "fail":
                raise TemplateFailedError(args[0])
        raise NotImplementedError(function["type"])

    def _operator(self, operator: Mapping[str, Any]) -> Any:  # noqa: PLR0911 - one per operator
        operands = operator["operands"]
        match operator["type"]:
            case "index_accessor":
                return self.eval(operands["operand_1"])[self.eval(operands["operand_2"])]
            case "equals":
                return self.eval(operands["operand_1"]) == self.eval(operands["operand_2"])
            case "not_equals":
                return self.eval(operands["operand_1"]) != self.eval(operands["operand_2"])
            case "and":
                return self.eval(operands["operand_1"]) and self.eval(operands["operand_2"])
            case "or":
                return self.eval(operands["operand_1"]) or self.eval(operands["operand_2"])
            case "not":
                return not self.eval(operands["bool_value"])
            case "conditional":
                branch = "true_value" if self.eval(operands["condition"]) else "false_value"
                return self.eval(operands[branch])
        raise NotImplementedError(operator["type"])


def _app_resource() -> dict[str, Any]:
    """Return the parsed Container App resource."""
    resources = _parse(CONTAINER_APP)["resources"]
    (app,) = (r for r in resources.values() if r["type"] == "Microsoft.App/containerApps")
    config: dict[str, Any] = _config(app)
    return config


def _container() -> dict[str, Any]:
    """Return the parsed engram-voice container of the Container App."""
    (container,) = _app_resource()["properties"]["template"]["containers"]
    result: dict[str, Any] = container
    return result


def _modes() -> list[dict[str, Any]]:
    """Return every combination of the module's mode parameters (and Zep on/off)."""
    params = _parse(CONTAINER_APP)["parameters"]
    names = ("openAiAuth", "authMode", "memoryQueue")
    choices = [_allowed(params[name]) or [] for name in names]
    modes = []
    for values, zep, voicelive in itertools.product(
        itertools.product(*choices), (False, True), (True, False)
    ):
        mode: dict[str, Any] = dict(zip(names, values, strict=True))
        mode["zepApiUrl"] = "https://zep.example" if zep else ""
        mode["hasZepApiKey"] = zep
        mode["voiceLiveEndpoint"] = VOICELIVE_ENDPOINT if voicelive else ""
        modes.append(mode)
    return modes


def _mode_id(mode: Mapping[str, Any]) -> str:
    """Name a mode for pytest ids."""
    zep = "zep" if mode["hasZepApiKey"] else "nozep"
    voicelive = "voicelive" if mode["voiceLiveEndpoint"] else "novoicelive"
    return f"{mode['openAiAuth']}-{mode['authMode']}-{mode['memoryQueue']}-{zep}-{voicelive}"


def _scope(mode: Mapping[str, Any]) -> _Scope:
    """Return an evaluator of the Container App module for one mode."""
    return _Scope(_parse(CONTAINER_APP), {**MODULE_INPUTS, **mode})


def _env_entries(mode: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Return the container's env list as the template builds it for ``mode``."""
    entries: list[dict[str, Any]] = _scope(mode).eval(_container()["env"])
    return entries


def _environment(mode: Mapping[str, Any]) -> dict[str, str]:
    """Return the process environment the container gets (secret refs resolved to stand-ins)."""
    env = {}
    for entry in _env_entries(mode):
        env[entry["name"]] = (
            SECRET_VALUES[entry["secretRef"]] if "secretRef" in entry else entry["value"]
        )
    return env


class _RecordingEnv(Mapping[str, str]):
    """An environment mapping that remembers every variable name the code asks for."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = dict(env)
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self._env[key]

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        """Record ``key`` and look it up."""
        self.asked.add(key)
        return self._env.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._env)

    def __len__(self) -> int:
        return len(self._env)


def _code_choices(name: str, read: Any) -> list[str]:
    """Return the values the code accepts for a choice setting, from its own error message."""
    reader = EnvReader({name: "not-a-choice"})
    read(reader)
    (problem,) = (p for p in reader.problems if p.startswith(f"{name}="))
    return [choice.strip() for choice in problem.split("must be one of ", 1)[1].split(",")]


MODES = _modes()
CODE_QUEUES = _code_choices("MEMORY_QUEUE", MemorySettings.from_env)
"""Queue backends this code accepts (``postgres`` arrives with the PostgreSQL backend)."""
BASE_MODE = next(m for m in MODES if m["memoryQueue"] == "sqlite")


def _skip_unless_the_code_accepts(queue: str) -> None:
    """Skip a check that loads settings for a queue backend this code does not have yet."""
    if queue not in CODE_QUEUES:
        pytest.skip(f"MEMORY_QUEUE={queue} is not accepted by this code yet (issue13-pg adds it)")


@pytest.mark.parametrize("path", _bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_bicep_file_parses(path):
    """Every Bicep file is syntactically valid for a Bicep grammar (pycep-parser)."""
    parsed = _parse(path)
    assert parsed["parameters"] or parsed.get("resources")


def test_main_targets_the_subscription_and_creates_the_resource_group():
    """main.bicep deploys at subscription scope and creates the resource group itself."""
    parsed = _parse(MAIN)
    assert parsed["globals"]["scope"]["value"] == "subscription"
    groups = [
        r for r in parsed["resources"].values() if r["type"] == "Microsoft.Resources/resourceGroups"
    ]
    assert len(groups) == 1


@pytest.mark.parametrize("parent", [MAIN, CONTAINER_APP], ids=lambda p: p.name)
def test_modules_exist_and_receive_only_declared_parameters(parent):
    """Each module path exists, gets only parameters it declares and every one it requires."""
    for name, module in _parse(parent)["modules"].items():
        path = parent.parent / module["detail"]["path"]
        assert path.is_file(), f"module {name}: {path} is missing"
        declared = _parse(path)["parameters"]
        passed = set(_config(module)["params"])
        assert passed <= set(declared), f"module {name} passes undeclared {passed - set(declared)}"
        required = {p for p, spec in declared.items() if not _has_default(spec)}
        assert required <= passed, f"module {name} misses required {required - passed}"


def test_module_outputs_used_by_main_exist():
    """Every ``<module>.outputs.<name>`` that main.bicep reads is an output of that module."""
    parsed = _parse(MAIN)
    outputs = {
        name: set(_parse(MAIN.parent / m["detail"]["path"]).get("outputs", {}))
        for name, m in parsed["modules"].items()
    }
    used = []
    for node in _walk(parsed):
        if isinstance(node, dict) and node.get("type") == "property_accessor":
            first, rest = node["operands"]["operand_1"], node["operands"]["operand_2"]
            if isinstance(first, str) and first in outputs and isinstance(rest, dict):
                inner = rest["operator"]["operands"]
                assert inner["operand_1"] == "outputs"
                used.append((first, inner["operand_2"]))
    assert used
    for module, output in used:
        assert output in outputs[module], f"{module}.outputs.{output} is not declared"


def test_loaded_files_exist_and_the_script_is_valid_bash():
    """Files pulled in with loadTextContent exist, and the deployment script parses as bash."""
    loaded = [
        (path.parent / node["parameters"]["file_path"]).resolve()
        for path in _bicep_files()
        for node in _walk(_parse(path))
        if isinstance(node, dict) and node.get("type") == "load_text_content"
    ]
    assert loaded
    for script in loaded:
        assert script.is_file(), script
        if script.suffix == ".sh" and shutil.which("bash"):
            subprocess.run(["bash", "-n", str(script)], check=True)  # noqa: S603, S607


def test_parameters_file_matches_main():
    """The parameters file sets only main's parameters, allowed values, and every required one."""
    params = _parse(MAIN)["parameters"]
    document = json.loads((INFRA / "main.parameters.json").read_text())
    given = document["parameters"]
    assert set(given) <= set(params), set(given) - set(params)
    for name, entry in given.items():
        allowed = _allowed(params[name])
        if allowed is not None:
            assert entry["value"] in allowed, f"{name}={entry['value']!r} not in {allowed}"
        assert not _is_secure(params[name]), f"{name} is secure: never put it in the file"
    required = {name for name, spec in params.items() if not _has_default(spec)}
    assert required <= set(given), f"parameters without a value: {required - set(given)}"


def test_main_outputs_what_operators_need():
    """main.bicep outputs the app URL, the Static Web App hostname, the vault and the identity."""
    outputs = set(_parse(MAIN)["outputs"])
    assert {"appUrl", "staticWebAppHostname", "keyVaultName", "identityClientId"} <= outputs


def test_template_modes_are_modes_the_code_accepts():
    """The template's credential, caller-auth and queue choices are values the service reads."""
    params = _parse(CONTAINER_APP)["parameters"]
    main_params = _parse(MAIN)["parameters"]
    for name in ("openAiAuth", "authMode", "memoryQueue"):
        assert _allowed(params[name]) == _allowed(main_params[name]), name
    assert set(_allowed(params["authMode"]) or []) <= set(AUTH_MODES) - {"none"}
    for mode in MODES:
        assert _environment(mode)["AZURE_OPENAI_AUTH"] in AUTH_CHOICES
    offered = set(_allowed(params["memoryQueue"]) or [])
    assert set(CODE_QUEUES) <= offered == {"postgres", "sqlite"}
    assert params["memoryQueue"]["default"] == main_params["memoryQueue"]["default"] == "postgres"
    _skip_unless_the_code_accepts("postgres")


@pytest.mark.parametrize("mode", MODES, ids=_mode_id)
def test_template_environment_starts_the_service_in_production(mode):
    """The env the Container App sets (secrets as stand-ins) passes the production settings."""
    _skip_unless_the_code_accepts(mode["memoryQueue"])
    env = _environment(mode)
    settings = Settings.from_env(env)
    assert settings.server.environment == "production"
    assert settings.server.host == "0.0.0.0"  # noqa: S104 - containers bind every interface
    assert settings.auth.mode == mode["authMode"]
    assert settings.memory.queue == mode["memoryQueue"]
    assert settings.auth.cors_allow_origins == (MODULE_INPUTS["corsAllowOrigins"],)
    expected_auth = {"api-key-secret-ref": "api-key"}.get(mode["openAiAuth"], mode["openAiAuth"])
    assert settings.realtime.auth == expected_auth
    if expected_auth == "key-vault":
        assert settings.realtime.key_vault_secret_name == DEFAULT_KEY_VAULT_SECRET_NAME
    if expected_auth in {"key-vault", "entra"}:
        assert settings.realtime.client_id == MODULE_INPUTS["identityClientId"]
    assert (settings.memory.zep.api_url is not None) == mode["hasZepApiKey"]
    if mode["memoryQueue"] == "postgres":
        assert settings.memory.worker == "off"  # the worker app delivers
        postgres = settings.memory.postgres  # type: ignore[attr-defined]
        assert (postgres.host, postgres.database, postgres.user, postgres.auth) == (
            MODULE_INPUTS["postgresHost"],
            MODULE_INPUTS["postgresDatabase"],
            MODULE_INPUTS["postgresUser"],
            "entra",
        )
        assert postgres.password is None
        assert postgres.client_id == MODULE_INPUTS["identityClientId"]
    voicelive = settings.realtime.voicelive
    if not mode["voiceLiveEndpoint"]:
        assert voicelive is None
        assert settings.realtime.default_upstream == "azure-openai"
        return
    assert voicelive is not None
    assert settings.realtime.default_upstream == "voice-live"
    assert voicelive.endpoint == VOICELIVE_ENDPOINT
    assert (voicelive.model, voicelive.api_version) == (
        "gpt-realtime",
        DEFAULT_VOICELIVE_API_VERSION,
    )
    assert voicelive.calls_url().startswith(
        "wss://ai-engramvoice-x.services.ai.azure.com/voice-live/realtime/calls?"
    )
    assert voicelive.auth == expected_auth
    if expected_auth == "key-vault":
        assert voicelive.key_vault_secret_name == DEFAULT_VOICELIVE_SECRET_NAME
        assert voicelive.key_vault_url == MODULE_INPUTS["keyVaultUri"].rstrip("/")
    if expected_auth == "api-key":
        assert voicelive.api_key is not None
        assert voicelive.api_key.reveal() == SECRET_VALUES["voicelive-api-key"]
    if expected_auth in {"key-vault", "entra"}:
        assert voicelive.client_id == MODULE_INPUTS["identityClientId"]


@pytest.mark.parametrize("mode", MODES, ids=_mode_id)
def test_template_sets_only_real_settings_once(mode):
    """Every variable the template sets is one the service reads, and none is set twice."""
    names = [entry["name"] for entry in _env_entries(mode)]
    assert len(names) == len(set(names)), names
    _skip_unless_the_code_accepts(mode["memoryQueue"])
    recording = _RecordingEnv(_environment(mode))
    Settings.from_env(recording)
    assert set(names) <= recording.asked, set(names) - recording.asked


@pytest.mark.parametrize("mode", MODES, ids=_mode_id)
def test_secret_refs_are_key_vault_references(mode):
    """Each secretRef names a declared secret that Key Vault resolves with the app identity."""
    scope = _scope(mode)
    secrets = scope.eval(_app_resource()["properties"]["configuration"]["secrets"])
    declared = {s["name"]: s for s in secrets}
    assert len(declared) == len(secrets)
    refs = {e["secretRef"] for e in _env_entries(mode) if "secretRef" in e}
    assert refs == set(declared), "every secret is used and every secretRef is declared"
    for secret in secrets:
        assert "value" not in secret, f"{secret['name']} must come from Key Vault"
        assert secret["keyVaultUrl"].startswith(MODULE_INPUTS["keyVaultUri"] + "secrets/")
        assert secret["identity"] == MODULE_INPUTS["identityId"]
    if mode["openAiAuth"] == "api-key-secret-ref":
        url = declared["azure-openai-api-key"]["keyVaultUrl"]
        assert url.endswith("/secrets/" + DEFAULT_KEY_VAULT_SECRET_NAME)
        if mode["voiceLiveEndpoint"]:
            url = declared["voicelive-api-key"]["keyVaultUrl"]
            assert url.endswith("/secrets/" + DEFAULT_VOICELIVE_SECRET_NAME)


def test_key_vault_secret_name_is_the_code_default():
    """The vault's API key secret and the env default both use the code's secret name."""
    vault = _parse(INFRA / "modules" / "keyvault.bicep")
    assert vault["parameters"]["apiKeySecretName"]["default"] == DEFAULT_KEY_VAULT_SECRET_NAME
    app = _parse(CONTAINER_APP)["parameters"]
    assert app["apiKeySecretName"]["default"] == DEFAULT_KEY_VAULT_SECRET_NAME
    keys = _parse(INFRA / "modules" / "memorykeys.bicep")["parameters"]["secretName"]
    assert keys["default"] == app["memoryTokenKeysSecretName"]["default"]


def test_key_vault_uses_rbac_and_soft_delete():
    """The vault authorizes with Azure RBAC and keeps deleted secrets recoverable."""
    resources = _parse(INFRA / "modules" / "keyvault.bicep")["resources"]
    (vault,) = (r for r in resources.values() if r["type"] == "Microsoft.KeyVault/vaults")
    properties = _config(vault)["properties"]
    assert properties["enableRbacAuthorization"] is True
    assert properties["enableSoftDelete"] is True


def test_role_assignments_use_the_well_known_role_ids():
    """Roles are well-known ids: Secrets User on the vault, OpenAI User on the account, AcrPull."""
    granted = set()
    for path in _bicep_files():
        parsed = _parse(path)
        variables = {name: v["value"] for name, v in parsed.get("variables", {}).items()}
        for resource in parsed.get("resources", {}).values():
            if resource["type"] != "Microsoft.Authorization/roleAssignments":
                continue
            body = _config(resource)
            definition = body["properties"]["roleDefinitionId"]["function"]
            role = variables[definition["parameters"]["resource_name_1"]]
            assert role in WELL_KNOWN_ROLES, f"{path.name}: unknown role {role}"
            granted.add((path.name, body["scope"], role))
    assert ("keyvault.bicep", "vault", KEY_VAULT_SECRETS_USER) in granted
    assert ("openai.bicep", "account", COGNITIVE_SERVICES_OPENAI_USER) in granted
    assert ("openai.bicep", "account", COGNITIVE_SERVICES_USER) in granted
    assert ("openai.bicep", "account", FOUNDRY_USER) in granted
    assert ("acrpull.bicep", "registry", ACR_PULL) in granted


def _voicelive_role_assignments() -> dict[str, dict[str, Any]]:
    """Return openai.bicep's role assignments for Voice Live, by role id (with condition)."""
    parsed = _parse(INFRA / "modules" / "openai.bicep")
    variables = {name: v["value"] for name, v in parsed["variables"].items()}
    found = {}
    for resource in parsed["resources"].values():
        if resource["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        definition = _config(resource)["properties"]["roleDefinitionId"]["function"]
        role = variables[definition["parameters"]["resource_name_1"]]
        if role in {COGNITIVE_SERVICES_USER, FOUNDRY_USER}:
            found[role] = resource["config"]
    return found


@pytest.mark.parametrize(
    ("openai_auth", "voicelive", "granted"),
    [
        ("entra", True, True),
        ("entra", False, False),
        ("key-vault", True, False),
        ("api-key-secret-ref", True, False),
    ],
)
def test_keyless_voice_live_grants_cognitive_services_user_and_foundry_user(
    openai_auth, voicelive, granted
):
    """Keyless mode grants both Voice Live roles on the account; key modes grant neither."""
    main_params = _parse(MAIN)["modules"]["openai"]["config"]["params"]
    scope_main = _Scope(_parse(MAIN), {"openAiAuth": openai_auth, "voiceLive": voicelive})
    module_inputs = {
        "voiceLive": scope_main.eval(main_params["voiceLive"]),
        "voiceLiveKeyless": scope_main.eval(main_params["voiceLiveKeyless"]),
        "location": "eastus2",
        "name": "ai-engramvoice-x",
    }
    scope = _Scope(_parse(INFRA / "modules" / "openai.bicep"), module_inputs)
    assignments = _voicelive_role_assignments()
    assert set(assignments) == {COGNITIVE_SERVICES_USER, FOUNDRY_USER}
    for config in assignments.values():
        assert config["config"]["scope"] == "account"
        assert config["config"]["properties"]["principalId"] == "appPrincipalId"
        assert scope.eval(config["condition"]) is granted


def test_voice_live_regions_are_the_webrtc_regions_and_others_stop_the_deployment():
    """The account's Voice Live region guard lists the WebRTC regions; elsewhere it fails."""
    parsed = _parse(INFRA / "modules" / "openai.bicep")
    listed = parsed["variables"]["voiceLiveWebRtcRegions"]["value"]
    assert set(listed) == WEBRTC_REGIONS == set(VOICELIVE_WEBRTC_REGIONS)
    guard = parsed["variables"]["accountLocation"]["value"]
    main_location = _parse(MAIN)["parameters"]["location"]
    assert main_location["default"] in WEBRTC_REGIONS
    for region in _allowed(main_location) or []:
        for voicelive in (True, False):
            scope = _Scope(parsed, {"location": region, "voiceLive": voicelive, "name": "x"})
            if voicelive and region not in WEBRTC_REGIONS:
                with pytest.raises(TemplateFailedError, match=region):
                    scope.eval(guard)
            else:
                assert scope.eval(guard) == region
    account = next(
        r
        for r in parsed["resources"].values()
        if r["type"] == "Microsoft.CognitiveServices/accounts"
    )
    assert _config(account)["location"] == "accountLocation"


def test_voice_live_api_versions_offered_serve_calls():
    """The template offers only api-versions the service accepts (never the GA 2026-07-15)."""
    app_versions = _allowed(_parse(CONTAINER_APP)["parameters"]["voiceLiveApiVersion"]) or []
    main_versions = _allowed(_parse(MAIN)["parameters"]["voiceLiveApiVersion"]) or []
    assert app_versions == main_versions
    assert DEFAULT_VOICELIVE_API_VERSION in app_versions
    for version in app_versions:
        assert version.lower() not in REFUSED_API_VERSIONS
        env = _environment({**BASE_MODE, "voiceLiveApiVersion": version})
        assert Settings.from_env(env).realtime.voicelive.api_version == version  # type: ignore[union-attr]
    output = _parse(INFRA / "modules" / "openai.bicep")["outputs"]["voiceLiveEndpoint"]
    endpoint = _Scope(_parse(INFRA / "modules" / "openai.bicep"), {"name": "ai-engramvoice-x"})
    assert endpoint.eval(output)["value"] == VOICELIVE_ENDPOINT


def test_ai_account_serves_gpt_realtime_with_entra_capable_endpoint():
    """The AI account is region-restricted, has a custom subdomain and deploys gpt-realtime."""
    parsed = _parse(INFRA / "modules" / "openai.bicep")
    assert _allowed(parsed["parameters"]["location"]) == ["eastus2", "swedencentral"]
    assert _allowed(_parse(MAIN)["parameters"]["location"]) == ["eastus2", "swedencentral"]
    resources = {r["type"]: _config(r) for r in parsed["resources"].values()}
    account = resources["Microsoft.CognitiveServices/accounts"]
    assert account["properties"]["customSubDomainName"]
    deployment = resources["Microsoft.CognitiveServices/accounts/deployments"]
    assert deployment["sku"]["name"] == "GlobalStandard"
    model = deployment["properties"]["model"]
    assert (model["format"], model["name"]) == ("OpenAI", "gpt-realtime")
    assert parsed["parameters"]["deploymentName"]["default"] == "gpt-realtime"
    assert Settings.from_env(_environment(BASE_MODE)).realtime.deployment == "gpt-realtime"
    endpoint = _Scope(parsed, {"name": "ai-engramvoice-x"}).eval(parsed["outputs"]["endpoint"])
    assert endpoint["value"] == MODULE_INPUTS["openAiEndpoints"]


def test_probes_and_ingress_match_the_service():
    """Probes hit /healthz and /readyz on PORT, routes the app really serves; ingress is HTTPS."""
    scope = _scope(BASE_MODE)
    settings = Settings.from_env(_environment(BASE_MODE))
    probes = {p["type"]: scope.eval(p["httpGet"]) for p in _container()["probes"]}
    assert probes["Liveness"] == {"path": "/healthz", "port": settings.server.port}
    assert probes["Readiness"] == {"path": "/readyz", "port": settings.server.port}
    ingress = scope.eval(_app_resource()["properties"]["configuration"]["ingress"])
    assert ingress["external"] is True
    assert ingress["allowInsecure"] is False
    assert ingress["targetPort"] == settings.server.port == 8000
    app = create_app(settings)
    served = {route.path: route for route in app.routes}
    for probe in probes.values():
        assert "GET" in served[probe["path"]].methods  # type: ignore[attr-defined]


def test_sqlite_queue_is_on_the_share_with_a_single_replica():
    """With the sqlite queue the database lives on the mounted share and one replica writes."""
    template = _app_resource()["properties"]["template"]
    for mode in MODES:
        scope = _scope({**mode, "maxReplicas": 10, "minReplicas": 3})
        scale = scope.eval({k: v for k, v in template["scale"].items() if k != "rules"})
        mounts = {m["mountPath"]: m["volumeName"] for m in scope.eval(_container()["volumeMounts"])}
        volumes = {v["name"]: v for v in scope.eval(template["volumes"])}
        if mode["memoryQueue"] == "postgres":
            assert scale == {"minReplicas": 3, "maxReplicas": 10}  # the HTTP rule scales out
            assert mounts == volumes == {}
            assert "MEMORY_SQLITE_PATH" not in _environment(mode)
            continue
        assert scale == {"minReplicas": 1, "maxReplicas": 1}
        sqlite_dir = str(Path(_environment(mode)["MEMORY_SQLITE_PATH"]).parent)
        assert volumes[mounts[sqlite_dir]]["storageType"] == "AzureFile"
    (rule,) = template["scale"]["rules"]
    assert "concurrentRequests" in rule["http"]["metadata"]


def test_cors_allows_the_static_web_app():
    """main.bicep builds CORS_ALLOW_ORIGINS from the Static Web App's default hostname."""
    params = _parse(MAIN)["modules"]["app"]["config"]["params"]
    assert "web.outputs.defaultHostname" in json.dumps(params["corsAllowOrigins"]).replace(
        '"operand_1": "web", "operand_2": {"operator": {"type": "property_accessor", '
        '"operands": {"operand_1": "outputs", "operand_2": "defaultHostname"}}}',
        "web.outputs.defaultHostname",
    )


def _dockerfile_stages() -> list[list[str]]:
    """Return the Dockerfile's instructions (continuations joined), grouped by stage."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    stages: list[list[str]] = []
    for line in lines:
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_is_multi_stage_non_root_with_healthcheck():
    """The image builds with constraints.txt in a builder stage and runs as a non-root user."""
    stages = _dockerfile_stages()
    assert len(stages) >= 2
    builder = next("\n".join(stage) for stage in stages if "pip install" in "\n".join(stage))
    runtime = stages[-1]
    assert re.search(r"pip install .*-c constraints\.txt", builder)
    users = [line.split()[1] for line in runtime if line.upper().startswith("USER ")]
    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}
    (healthcheck,) = (line for line in runtime if line.upper().startswith("HEALTHCHECK "))
    assert "/healthz" in healthcheck
    assert "curl" not in healthcheck
    assert "wget" not in healthcheck
    assert "EXPOSE 8000" in runtime
    assert runtime[-1] == 'CMD ["engram-voice", "serve"]'


def test_queue_share_is_writable_by_the_image_user():
    """The share mounts with the uid of the image's user and the path the image prepares."""
    runtime = "\n".join(_dockerfile_stages()[-1])
    uid = re.search(r"--uid (\d+)", runtime)
    assert uid
    (volume,) = _scope(BASE_MODE).eval(_app_resource()["properties"]["template"]["volumes"])
    assert f"uid={uid.group(1)}" in volume["mountOptions"].split(",")
    assert "nobrl" in volume["mountOptions"].split(",")
    sqlite_path = _environment(BASE_MODE)["MEMORY_SQLITE_PATH"]
    assert f"MEMORY_SQLITE_PATH={sqlite_path}" in runtime


def test_the_image_ships_the_api_reference_viewer_built_from_the_lock_file():
    """A node stage builds the /schema viewer with npm ci; the builder copies it into src."""
    stages = ["\n".join(stage) for stage in _dockerfile_stages()]
    (apidocs,) = (stage for stage in stages if "copy-apidocs.mjs" in stage)
    assert "npm ci" in apidocs
    assert "web/package-lock.json" in apidocs
    builder = next(stage for stage in stages if "pip install" in stage)
    assert re.search(r"COPY --from=\S+ \S*static/apidocs/? \S*static/apidocs/?", builder)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"!web/package.json", "!web/package-lock.json", "!web/scripts"} <= set(ignored)


def test_dockerignore_keeps_local_state_out():
    """The build context leaves out the virtualenv, git, local state and env files."""
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".git", "var", "*.env"} <= ignored


def _worker_module(name: str) -> dict[str, Any]:
    """Return a worker module of the Container App template (condition and params)."""
    module: dict[str, Any] = _parse(CONTAINER_APP)["modules"][name]
    return module


def _load_worker(env: Mapping[str, str]) -> tuple[Any, Any, _RecordingEnv]:
    """Load the worker's settings from ``env`` as ``engram-voice worker`` does; record lookups."""
    recording = _RecordingEnv(env)
    reader = EnvReader(recording)
    process, memory = _worker_settings(reader)
    reader.raise_if_invalid()
    return process, memory, recording


def test_postgres_is_a_flexible_server_with_entra_sign_in_only():
    """The server takes Entra tokens only (no password exists) and the app identity is its admin."""
    parsed = _parse(POSTGRES)
    resources = {r["type"]: _config(r) for r in parsed["resources"].values()}
    server = resources["Microsoft.DBforPostgreSQL/flexibleServers"]
    assert server["properties"]["authConfig"] == {
        "activeDirectoryAuth": "Enabled",
        "passwordAuth": "Disabled",
        "tenantId": "tenantId",
    }
    assert "administratorLoginPassword" not in json.dumps(parsed)
    admin = resources["Microsoft.DBforPostgreSQL/flexibleServers/administrators"]
    assert admin["name"] == "appPrincipalId"
    assert admin["properties"]["principalType"] == "ServicePrincipal"
    assert admin["properties"]["principalName"] == "appIdentityName"
    database = resources["Microsoft.DBforPostgreSQL/flexibleServers/databases"]
    assert database["name"] == "databaseName"
    assert parsed["parameters"]["databaseName"]["default"] == MODULE_INPUTS["postgresDatabase"]
    module = _parse(MAIN)["modules"]["postgres"]
    assert _Scope(_parse(MAIN), {"memoryQueue": "postgres"}).eval(module["config"]["condition"])
    assert not _Scope(_parse(MAIN), {"memoryQueue": "sqlite"}).eval(module["config"]["condition"])
    params = _config(module)["params"]
    assert "identity" in json.dumps(params["appPrincipalId"])
    assert "appIdentityName" in json.dumps(params["appIdentityName"])


@pytest.mark.parametrize("mode", [m for m in MODES if m["memoryQueue"] == "postgres"], ids=_mode_id)
def test_postgres_env_names_server_database_and_identity_and_no_password(mode):
    """With postgres the service signs in with its identity (Entra), and its worker is off."""
    env = _environment(mode)
    assert env["MEMORY_QUEUE"] == "postgres"
    assert env["MEMORY_POSTGRES_HOST"] == MODULE_INPUTS["postgresHost"]
    assert env["MEMORY_POSTGRES_DB"] == MODULE_INPUTS["postgresDatabase"]
    assert env["MEMORY_POSTGRES_USER"] == MODULE_INPUTS["postgresUser"]
    assert env["MEMORY_POSTGRES_AUTH"] == "entra"
    assert env["AZURE_CLIENT_ID"] == MODULE_INPUTS["identityClientId"]
    assert env["MEMORY_WORKER"] == "off"
    assert not {"MEMORY_POSTGRES_PASSWORD", "MEMORY_SQLITE_PATH"} & set(env)


@pytest.mark.parametrize("mode", MODES, ids=_mode_id)
def test_workers_run_as_their_own_app_with_postgres_and_zep(mode):
    """With postgres (and Zep) `engram-voice worker` is its own app; with sqlite it is not."""
    module = _worker_module("workers")
    scope = _scope(mode)
    runs = mode["memoryQueue"] == "postgres" and mode["hasZepApiKey"]
    assert scope.eval(module["config"]["condition"]) is runs
    if not runs:
        return
    params = _config(module)["params"]
    env = {e["name"]: e for e in scope.eval(params["env"])}
    assert len(env) == len(scope.eval(params["env"])), "a variable is set twice"
    values = {
        k: SECRET_VALUES[e["secretRef"]] if "secretRef" in e else e["value"] for k, e in env.items()
    }
    assert (values["HOST"], values["PORT"], values["APP_ENV"]) == ("0.0.0.0", "8001", "production")  # noqa: S104
    assert values["MEMORY_QUEUE"] == "postgres"
    assert values["MEMORY_POSTGRES_AUTH"] == "entra"
    assert values["AZURE_CLIENT_ID"] == MODULE_INPUTS["identityClientId"]
    secrets = {s["name"] for s in scope.eval(params["secrets"])}
    assert {e["secretRef"] for e in env.values() if "secretRef" in e} == secrets == {"zep-api-key"}
    assert scope.eval(params["maxReplicas"]) >= scope.eval(params["minReplicas"])
    _skip_unless_the_code_accepts("postgres")
    process, memory, recording = _load_worker(values)
    assert (process.host, process.port, memory.queue) == ("0.0.0.0", 8001, "postgres")  # noqa: S104
    assert set(values) <= recording.asked, set(values) - recording.asked


def test_the_worker_app_runs_the_worker_command_with_probes_on_its_port():
    """The worker app runs `engram-voice worker`, probes /healthz on its port, stops gracefully."""
    parsed = _parse(WORKER_APP)
    (app,) = (r for r in parsed["resources"].values() if r["type"] == "Microsoft.App/containerApps")
    template = _config(app)["properties"]["template"]
    (container,) = template["containers"]
    assert (container["command"], container["args"]) == (["engram-voice"], ["worker"])
    assert "ingress" not in _config(app)["properties"]["configuration"]
    assert {p["type"]: p["httpGet"] for p in container["probes"]} == {
        "Startup": {"path": "/healthz", "port": "port"},
        "Liveness": {"path": "/healthz", "port": "port"},
    }
    # uvicorn's graceful stop (20 s) lets deliveries finish (15 s) and release their leases.
    assert template["terminationGracePeriodSeconds"] >= 20
    assert parsed["parameters"]["port"]["default"] == 8001


@pytest.mark.parametrize("mode", MODES, ids=_mode_id)
def test_the_sqlite_drain_runs_one_worker_on_the_share_only_while_migrating(mode):
    """The drain adds one worker on the old SQLite file (postgres mode only), on the share."""
    module = _worker_module("sqliteDrainWorker")
    for drain in (False, True):
        scope = _scope({**mode, "sqliteDrain": drain})
        runs = drain and mode["memoryQueue"] == "postgres" and mode["hasZepApiKey"]
        assert scope.eval(module["config"]["condition"]) is runs
    if not runs:
        return
    params = _config(module)["params"]
    env = {e["name"]: e for e in scope.eval(params["env"])}
    values = {
        k: SECRET_VALUES[e["secretRef"]] if "secretRef" in e else e["value"] for k, e in env.items()
    }
    assert values["MEMORY_QUEUE"] == "sqlite"
    mounts = {m["mountPath"]: m["volumeName"] for m in scope.eval(params["volumeMounts"])}
    volumes = {v["name"]: v for v in scope.eval(params["volumes"])}
    sqlite_dir = str(Path(values["MEMORY_SQLITE_PATH"]).parent)
    assert volumes[mounts[sqlite_dir]]["storageType"] == "AzureFile"
    assert (
        values["MEMORY_SQLITE_PATH"]
        == _environment({**mode, "memoryQueue": "sqlite"})["MEMORY_SQLITE_PATH"]
    )
    assert (params["minReplicas"], params["maxReplicas"]) == (1, 1)
    process, memory, recording = _load_worker(values)
    assert (process.port, memory.queue, memory.zep.api_url) == (
        8001,
        "sqlite",
        "https://zep.example",
    )
    assert set(values) <= recording.asked, set(values) - recording.asked
