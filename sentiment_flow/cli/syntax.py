"""Messages in the syntax the user typed: `--option VALUE` at a shell, `-P option=VALUE` under `mlflow run`.

Library messages name their fixes as `sentiment-flow` options and command lines; under `mlflow run` (MLFLOW_RUN_ID
set) `in_user_syntax` rewrites them into the MLproject parameters and `mlflow run . -e ENTRY_POINT` lines that the
user can type instead, read from the project's MLproject.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path

import click

# The CLI's commands by name: the group's own table (group.py hands it over), filled as command modules register.
COMMANDS: Mapping[str, click.Command] = {}


def in_user_syntax(text: str) -> str:
    """`text` with its fixes in the syntax of the user: as written (`--eval-data PATH`, `--force`) at a shell, in
    MLproject parameters under `mlflow run` (MLFLOW_RUN_ID set): `-P eval_data=PATH`, `-P force=true`, and a
    `sentiment-flow rollback NAME --alias A` line as `mlflow run . -e rollback -P model_name=NAME -P alias=A`."""
    if not os.environ.get("MLFLOW_RUN_ID"):
        return text
    entry_points = _entry_points()
    declared = {option: param for _, _, options in entry_points.values() for option, param in options.items()}
    # One pass: a whole command line takes another entry point's parameters, not the running one's.
    return USER_TEXT.sub(
        lambda m: _as_mlflow_run(m, entry_points) if m["command"] else _as_parameter(m, declared), text
    )


# `--name` and what follows it: an option's value is a placeholder (PATH, V), a number, a quoted or <described>
# value, `...`, a word or path; a flag's value is true or false. The sentence goes on after anything else.
CLI_OPTION = (
    r"(?<![\w-])--(?P<name>[a-z][a-z0-9-]*)"
    r"(?: (?!-)(?P<value>'[^']*'|\"[^\"]*\"|<[^<>]*>|\.\.\.|[./~]*\w(?:[\w./:@~+-]*[\w/])?))?"
)


# Words that follow an option in library prose (`--reason is too long`, `--auth needs ...`): never its value.
PROSE = frozenset(
    (
        "a",
        "an",
        "and",
        "are",
        "as",
        "by",
        "for",
        "if",
        "in",
        "is",
        "must",
        "needs",
        "of",
        "on",
        "or",
        "the",
        "to",
        "was",
        "with",
        "would",
    )
)


# A `sentiment-flow COMMAND ...` line: in backticks up to the closing one, else up to the end of the sentence.
COMMAND_LINE = (
    r"(?P<tick>`)?sentiment-flow (?P<command>[a-z]+)(?P<args>(?(tick)[^`]*|(?: [^\s`]*[^\s`.;,:])*))"
    r"(?(tick)(?=`)|(?=[.;,:]?(?:\s|$)))"
)


USER_TEXT = re.compile(f"{COMMAND_LINE}|{CLI_OPTION}")


def _as_parameter(match: re.Match, declared: dict[str, str]) -> str:
    """`-P name=VALUE` for one `--name VALUE` of this CLI; options it does not have are left as they are."""
    option, value = match["name"], match["value"]
    takes_value = _options().get(option)
    if takes_value is None:
        return match[0]
    after = ""
    if value is not None and (value in PROSE or (not takes_value and value not in ("true", "false"))):
        value, after = None, match[0][len(option) + 2 :]  # " needs ..." goes back into the sentence
    # Extra parameters reach the command as `--KEY VALUE`: only declared ones may be spelt with underscores.
    param = declared.get(option, option)
    if value is None and takes_value:
        return f"-P {param}{after}"  # named, as in "raise -P max_train_samples"
    return f"-P {param}={value or 'true'}{after}"


def _as_mlflow_run(match: re.Match, entry_points: dict[str, tuple[str, list[str], dict[str, str]]]) -> str:
    """The `mlflow run` form of a `sentiment-flow` command line; as it was if no entry point runs that command."""
    if match["command"] not in entry_points:
        return match[0]
    entry_point, positional, options = entry_points[match["command"]]
    positional = list(positional)
    words = iter(match["args"].split())
    params = []
    for word in words:
        if not word.startswith("--"):
            params.append((positional.pop(0) if positional else word, word))
            continue
        option = word[2:]
        takes_value = _options().get(option, True)
        value = next(words, "...") if takes_value else "true"
        params.append((options.get(option, option), value))
    run = "mlflow run ." + ("" if entry_point == "main" else f" -e {entry_point}")
    return (match["tick"] or "") + run + "".join(f" -P {param}={value}" for param, value in params)


@functools.cache
def _options() -> dict[str, bool]:
    """Every option of every command, by name without its dashes: True if it takes a value, False for a flag."""
    return {
        name[2:]: not isinstance(param.type, click.types.BoolParamType)
        for command in COMMANDS.values()
        for param in command.params
        if isinstance(param, click.Option)
        for name in param.opts
        if name.startswith("--")
    }


@functools.cache
def _entry_points() -> dict[str, tuple[str, list[str], dict[str, str]]]:
    """CLI command -> (MLproject entry point, its positional parameters in order, option -> parameter), read
    from the commands in the project's MLproject (empty where there is none: not under `mlflow run`)."""
    import yaml

    # `mlflow run` runs an entry point in the project's folder; a checkout also has it beside the package.
    path = next(
        (p for p in (Path("MLproject"), Path(__file__).resolve().parents[2] / "MLproject") if p.is_file()), None
    )
    if path is None:
        return {}
    found = {}
    for entry_point, spec in yaml.safe_load(path.read_text())["entry_points"].items():
        command = re.search(r"-m sentiment_flow (?P<command>[a-z]+)(?P<args>.*)", spec["command"])
        if command is None:
            continue
        words = command["args"].split()
        options = {word[2:]: words[i + 1].strip("{}") for i, word in enumerate(words) if word.startswith("--")}
        positional = [
            word.strip("{}")
            for i, word in enumerate(words)
            if word.startswith("{") and (i == 0 or not words[i - 1].startswith("--"))
        ]
        found[command["command"]] = (entry_point, positional, options)
    return found
