"""The documentation agrees with the code: variables, defaults, endpoints, links, commands.

Rule for environment variables: ``docs/configuration.md`` has one table row per variable,
and the set of rows equals the union of

- every name the code asks an :class:`EnvReader` or ``os.environ`` for, found both by
  loading each settings group through a recording reader and by a static scan of ``src/``;
- the web client's build variables (``import.meta.env`` / ``process.env`` in ``web/``);
- :data:`LIBRARY_VARIABLES`: variables read by a library, not by our code, that an
  operator sets on purpose (each one is checked to occur in that library's source).
  Variables the platform sets for a library (``IDENTITY_ENDPOINT``…) are not rows.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from engram_voice import cli
from engram_voice.app import create_app
from engram_voice.auth import AuthSettings
from engram_voice.emulator import EmulatorConfig
from engram_voice.envreader import EnvReader
from engram_voice.errors import ConfigurationError
from engram_voice.memory import cli as memory_cli
from engram_voice.memory import metrics as memory_metrics
from engram_voice.memory.recall import metrics as recall_metrics
from engram_voice.memory.recall.settings import RecallSettings
from engram_voice.memory.settings import MemorySettings
from engram_voice.realtime import metrics as realtime_metrics
from engram_voice.realtime.calls import metrics as call_metrics
from engram_voice.realtime.settings import RealtimeSettings
from engram_voice.settings import ServerSettings, Settings
from engram_voice.usage import metrics as usage_metrics
from engram_voice.zep_standin.config import ZepStandinConfig

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "engram_voice"
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"
API = DOCS / "api.md"
OPERATIONS = DOCS / "operations.md"

LIBRARY_VARIABLES = {"AZURE_TOKEN_CREDENTIALS": "azure.identity"}
"""Variables a library reads that operators set; name -> the package that reads it."""

_READER_METHODS = "raw|text|optional|choice|integer|number|flag|items|require"
_NO_DEFAULT = frozenset({"raw", "optional", "require"})
"""Reader methods whose second argument (if any) is not a default."""
_LITERAL = r'"[^"]*"|-?\d+(?:\.\d+)?|True|False'
_READER_CALL = re.compile(
    rf"\breader\.({_READER_METHODS})\(\s*\"([A-Z][A-Z0-9_]*)\""
    rf"(?:\s*,\s*(?:default=)?({_LITERAL})\s*[,)])?"
)
_ENVIRON_CALL = re.compile(
    rf"\b(?:os\.environ\.get|os\.getenv|getenv)\(\s*\"([A-Z][A-Z0-9_]*)\"(?:\s*,\s*({_LITERAL}))?"
    r"|\bos\.environ\[\s*\"([A-Z][A-Z0-9_]*)\"\s*\]"
)
_DYNAMIC_ACCESS = re.compile(
    rf"\breader\.(?:{_READER_METHODS})\(\s*[^\s\"]"
    r"|\b(?:os\.environ\.get|os\.getenv|getenv)\(\s*[^\s\"]|\bos\.environ\[\s*[^\s\"]"
)
_WEB_ACCESS = re.compile(
    r"(?:process\.env|import\.meta\.env)(?:\[\s*\"([A-Z][A-Z0-9_]*)\"\s*\]|\.([A-Z][A-Z0-9_]*))"
    r"(?:\s+as\s+[^?)]+\)?)?(?:\s*\?\?\s*\"([^\"]*)\")?"
)
_TABLE_ROW = re.compile(r"^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|([^|]*)\|", re.MULTILINE)
_ENDPOINT_HEADING = re.compile(r"^### (GET|POST|PUT|PATCH|DELETE) (/\S*)\s*$", re.MULTILINE)
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_EVENT = re.compile(r"`((?:app|auth|credentials|realtime|memory|http)\.[a-z0-9_]+)`")


# -- what the code reads ------------------------------------------------------------------


class RecordingReader(EnvReader):
    """An EnvReader that remembers every name asked for and the default offered for it."""

    def __init__(self, env: Mapping[str, str]) -> None:
        super().__init__(env)
        self.names: set[str] = set()
        self.defaults: dict[str, set[str]] = {}

    def _default(self, name: str, default: object) -> None:
        rendered = _render(default)
        if rendered:
            self.defaults.setdefault(name, set()).add(rendered)

    def raw(self, name: str) -> str | None:
        """Record ``name`` and read it."""
        self.names.add(name)
        return super().raw(name)

    def text(self, name: str, default: str) -> str:
        """Record the default and read the text."""
        self._default(name, default)
        return super().text(name, default)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        """Record the default and read the choice."""
        self._default(name, default)
        return super().choice(name, default, choices)

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        """Record the default and read the integer."""
        self._default(name, default)
        return super().integer(name, default, minimum=minimum, maximum=maximum)

    def number(self, name: str, default: float, *, minimum: float, maximum: float) -> float:
        """Record the default and read the number."""
        self._default(name, default)
        return super().number(name, default, minimum=minimum, maximum=maximum)

    def flag(self, name: str, *, default: bool) -> bool:
        """Record the default and read the flag."""
        self._default(name, default)
        return super().flag(name, default=default)

    def items(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """Record the default and read the list."""
        self._default(name, default)
        return super().items(name, default)


class RecordingEnv(Mapping[str, str]):
    """An environment mapping that remembers every name looked up in it."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _render(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _literal(text: str | None) -> str | None:
    if text is None:
        return None
    if text.startswith('"'):
        return text[1:-1]
    if text in {"True", "False"}:
        return text.lower()
    return _render(float(text)) if "." in text else text


_LOADERS: tuple[Callable[[EnvReader], object], ...] = (
    ServerSettings.from_env,
    RealtimeSettings.from_env,
    lambda reader: AuthSettings.from_env(reader, bind_host="127.0.0.1"),
    MemorySettings.from_env,
    RecallSettings.from_env,
    EmulatorConfig.from_env,
    ZepStandinConfig.from_env,
)
# Several shapes, so that names read only in one mode are asked for too. The tenant is a
# placeholder so that tenant-derived defaults read as the docs write them.
_ENVS: tuple[dict[str, str], ...] = (
    {"ENTRA_TENANT_ID": "{tenant}"},
    {
        "ENTRA_TENANT_ID": "{tenant}",
        "APP_ENV": "local",
        "AZURE_OPENAI_AUTH": "key-vault",
        "KEY_VAULT_URL": "https://kv.vault.azure.net",
        "AUTH_MODE": "none",
        "ZEP_API_URL": "https://zep.example",
    },
    {"ENTRA_TENANT_ID": "{tenant}", "AZURE_OPENAI_AUTH": "entra", "AUTH_MODE": "easyauth"},
)


def _python_sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _web_sources() -> list[Path]:
    web = ROOT / "web"
    files = [*web.glob("*.ts"), *(web / "src").rglob("*.ts")]
    return sorted(path for path in files if "node_modules" not in path.parts)


def _loaded() -> RecordingReader:
    """Load every settings group through one recording reader per environment shape."""
    merged = RecordingReader({})
    for env in _ENVS:
        reader = RecordingReader(env)
        for load in _LOADERS:
            load(reader)
        merged.names |= reader.names
        for name, values in reader.defaults.items():
            merged.defaults.setdefault(name, set()).update(values)
        recording = RecordingEnv(env)
        with suppress(ConfigurationError):
            Settings.from_env(recording)
        merged.names |= recording.asked
    return merged


def _scanned() -> dict[str, set[str]]:
    """Return name -> literal defaults of every environment read written in ``src/``."""
    found: dict[str, set[str]] = {}
    for path in _python_sources():
        source = path.read_text()
        for match in _READER_CALL.finditer(source):
            method, name, literal = match.groups()
            values = found.setdefault(name, set())
            if method not in _NO_DEFAULT and (default := _literal(literal)) is not None:
                values.add(default)
        for match in _ENVIRON_CALL.finditer(source):
            values = found.setdefault(match.group(1) or match.group(3), set())
            if (default := _literal(match.group(2))) is not None:
                values.add(default)
    return found


def _web_variables() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in _web_sources():
        for match in _WEB_ACCESS.finditer(path.read_text()):
            values = found.setdefault(match.group(1) or match.group(2), set())
            if match.group(3):
                values.add(match.group(3))
    return found


def _code_variables() -> set[str]:
    return _loaded().names | set(_scanned()) | set(_web_variables())


def _documented_rows() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in _TABLE_ROW.finditer(CONFIGURATION.read_text())]


# -- environment variables ----------------------------------------------------------------


def test_the_scan_reads_every_environment_access_literally() -> None:
    """No source file reads a variable by a computed name the static scan could miss."""
    dynamic = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in _python_sources()
        for match in _DYNAMIC_ACCESS.finditer(path.read_text())
    ]
    assert dynamic == []


def test_the_static_scan_sees_what_the_settings_loaders_read() -> None:
    """Every name the loaders ask for is also found by the scan, so the two agree."""
    assert _loaded().names <= set(_scanned())


def test_every_variable_the_code_reads_is_documented() -> None:
    """Each environment variable read by the code has a row in docs/configuration.md."""
    documented = {name for name, _ in _documented_rows()}
    assert sorted(_code_variables() - documented) == []


def test_every_documented_variable_is_read_by_the_code_or_an_operator_set_library() -> None:
    """Each row names a variable the code reads or one listed in LIBRARY_VARIABLES."""
    documented = {name for name, _ in _documented_rows()}
    assert sorted(documented - _code_variables() - set(LIBRARY_VARIABLES)) == []


@pytest.mark.parametrize(("name", "package"), sorted(LIBRARY_VARIABLES.items()))
def test_library_variables_are_really_read_by_their_library(name: str, package: str) -> None:
    """A variable documented as read by a library occurs in that installed library's source."""
    spec = importlib.util.find_spec(package)
    assert spec is not None
    assert spec.submodule_search_locations is not None
    roots = [Path(location) for location in spec.submodule_search_locations]
    assert any(f'"{name}"' in path.read_text() for root in roots for path in root.rglob("*.py"))
    assert name in {row for row, _ in _documented_rows()}


def test_each_variable_is_documented_exactly_once() -> None:
    """No variable has two table rows in docs/configuration.md."""
    counts = Counter(name for name, _ in _documented_rows())
    assert {name: n for name, n in counts.items() if n > 1} == {}


def test_documented_defaults_match_the_code() -> None:
    """Each default the code offers (in every command that reads it) is in the row's default."""
    expected: dict[str, set[str]] = {}
    for source in (_loaded().defaults, _scanned(), _web_variables()):
        for name, values in source.items():
            expected.setdefault(name, set()).update(values)
    documented = {name: re.findall(r"`([^`]*)`", cell) for name, cell in _documented_rows()}
    wrong = {
        name: sorted(values - set(documented.get(name, [])))
        for name, values in expected.items()
        if values - set(documented.get(name, []))
    }
    assert wrong == {}


# -- API ----------------------------------------------------------------------------------


def _openapi() -> dict[str, Any]:
    env = {
        "APP_ENV": "local",
        "AUTH_MODE": "none",
        "AZURE_OPENAI_ENDPOINTS": "http://127.0.0.1:9",
        "AZURE_OPENAI_API_KEY": "k" * 32,
        "MEMORY_TOKEN_KEYS": f"k1:{'a' * 64}",
        "SERVE_WEB": "true",
        "MEMORY_SQLITE_PATH": str(Path(tempfile.gettempdir()) / "engram-docs-never-opened.db"),
    }
    schema: dict[str, Any] = create_app(Settings.from_env(env)).openapi_schema.to_schema()
    return schema


def _api_sections() -> dict[tuple[str, str], str]:
    text = API.read_text()
    headings = list(_ENDPOINT_HEADING.finditer(text))
    sections: dict[tuple[str, str], str] = {}
    for index, heading in enumerate(headings):
        end = headings[index + 1].start() if index + 1 < len(headings) else len(text)
        sections[(heading.group(1), heading.group(2))] = text[heading.end() : end]
    return sections


def test_api_doc_lists_exactly_the_operations_of_the_openapi_schema() -> None:
    """The `### METHOD /path` headings of docs/api.md equal the schema's operations."""
    schema = _openapi()
    operations = {
        (method.upper(), path) for path, item in schema["paths"].items() for method in item
    }
    assert set(_api_sections()) == operations
    assert len(_ENDPOINT_HEADING.findall(API.read_text())) == len(operations)


def test_api_doc_names_every_status_the_schema_declares() -> None:
    """Each response status of an operation in the schema appears in that endpoint's section."""
    sections = _api_sections()
    missing = {
        (method.upper(), path, status)
        for path, item in _openapi()["paths"].items()
        for method, operation in item.items()
        for status in operation.get("responses", {})
        if status not in sections.get((method.upper(), path), "")
    }
    assert missing == set()


# -- links, commands, metrics, events -----------------------------------------------------


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _slug(heading: str) -> str:
    text = re.sub(r"[^\w\s-]", "", heading.strip().lower())
    return re.sub(r"\s", "-", text)


def _anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def test_every_relative_link_in_the_docs_points_to_an_existing_file_and_heading() -> None:
    """Relative links in README.md and docs/*.md resolve to files (and headings) that exist."""
    broken: list[str] = []
    for path in _markdown_files():
        for match in _LINK.finditer(_FENCE.sub("", path.read_text())):
            target = match.group(1)
            if re.match(r"^[a-z]+:", target):
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(ROOT)} -> {target}"
            if not resolved.exists():
                broken.append(where)
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{where} (no such heading)")
    assert broken == []


def _subcommands(parser: argparse.ArgumentParser, prefix: str) -> Iterator[str]:
    for action in parser._actions:  # argparse exposes subcommands only here
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}"
                yield from _subcommands(sub, f"{prefix} {name}")


def test_operations_doc_names_every_cli_subcommand() -> None:
    """docs/operations.md mentions `engram-voice <command>` for every command the CLI has."""
    text = OPERATIONS.read_text()
    commands = [
        *_subcommands(cli._parser(), "engram-voice"),
        *_subcommands(memory_cli._parser(), "engram-voice memory dead-letters"),
    ]
    assert "engram-voice memory dead-letters list" in commands
    assert [command for command in commands if command not in text] == []


def test_operations_doc_names_every_dead_letter_option() -> None:
    """Every flag of `engram-voice memory dead-letters list|replay` is documented."""
    text = OPERATIONS.read_text()
    options = {
        option
        for action in memory_cli._parser()._actions
        if isinstance(action, argparse._SubParsersAction)
        for sub in action.choices.values()
        for flag in sub._actions
        for option in flag.option_strings
        if option not in {"-h", "--help"}
    }
    assert options
    assert sorted(option for option in options if option not in text) == []


def test_operations_doc_lists_every_engram_metric() -> None:
    """Each Prometheus metric the service defines is named in docs/operations.md."""
    text = OPERATIONS.read_text()
    names: set[str] = set()
    for module in (realtime_metrics, call_metrics, memory_metrics, recall_metrics, usage_metrics):
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                suffix = "_total" if value._type == "counter" else ""
                names.add(value._name + suffix)
    assert names
    assert sorted(name for name in names if f"`{name}`" not in text) == []


def _named_events(path: Path) -> set[str]:
    """Return the log events a doc names: on lines that say "log", and in a Logs table."""
    events: set[str] = set()
    in_logs_section = False
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            in_logs_section = line.strip() == "## Logs"
        first_cell = line.split("|")[1] if line.startswith("|") else ""
        if re.search(r"\blog", line, re.IGNORECASE):
            events.update(_EVENT.findall(line))
        elif in_logs_section:
            events.update(_EVENT.findall(first_cell))
    return events


def test_log_events_named_in_the_docs_are_emitted_by_the_code() -> None:
    """Every log event a doc names (`memory.dead_lettered`…) is a string the code logs."""
    source = "\n".join(path.read_text() for path in _python_sources())
    named = {(path.name, event) for path in _markdown_files() for event in _named_events(path)}
    assert ("operations.md", "memory.dead_lettered") in named
    assert sorted(item for item in named if f'"{item[1]}"' not in source) == []
