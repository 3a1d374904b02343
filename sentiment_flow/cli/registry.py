"""The registry commands: status, promote, approve, rollback and copy. Their logic, and every message, live in
sentiment_flow.registry; this module prints its reports as tables fitted to the terminal."""

from __future__ import annotations

import sys

import click
from rich.console import Console, Group
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from sentiment_flow.cli.group import cli, config_options, optional_flag, user_errors
from sentiment_flow.cli.syntax import in_user_syntax
from sentiment_flow.config import ALIASES, CHAMPION, KEY_METRICS, PromotionConfig

# Registry commands: the logic, and every message, live in sentiment_flow.registry.
OUTCOME_STYLE = {"pass": "green", "fail": "bold red", "forced": "yellow", "skipped": "dim"}


AUDIT_SHOWN = 20  # audit records `status` prints; the rest stay in the registered model's tags


FOLD_WIDTH = 50  # characters per line of a table's prose column (a gate's note, a base model's path)


@cli.command("status")
@click.argument("name")
@user_errors
def status_command(name: str) -> None:
    """Versions of registered model NAME: aliases, test metrics, lineage, created and promoted times."""
    from sentiment_flow import registry

    report = registry.status(name)
    out = Console()
    out.print(_status_table(out, report))
    for alias, entries in report.histories.items():
        out.print(f"{alias}: {_history_text(entries)}", highlight=False, markup=False)
    if report.audit:
        shown = report.audit[:AUDIT_SHOWN]
        older = (
            f", {len(report.audit) - len(shown)} older in its audit.* tags" if len(report.audit) > len(shown) else ""
        )
        out.print(f"Audit trail (newest first{older}):", highlight=False, markup=False)
        for record in shown:
            out.print(
                f"  {record.at[:19].replace('T', ' ')}  {record.by}  {record.summary}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
    if report.requests:
        out.print("Pending approval requests (newest first):", highlight=False, markup=False)
        for request, stale in report.requests:
            state = f"stale: {report.name}@{request.alias} moved since" if stale else "open"
            out.print(
                f"  v{request.version} -> @{request.alias}  requested by {request.requested_by} at "
                f"{request.requested_at[:19].replace('T', ' ')}  ({state}; gates {request.gates})",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )


@cli.command("promote")
@click.argument("name")
@click.option("--version", "version", required=True, help="The model version to promote, e.g. 3.")
@click.option("--alias", required=True, help=f"The alias to point at it: {', '.join(ALIASES)}.")
@optional_flag("--dry-run", help="Run the gates and report; change nothing.")
@click.option(
    "--reason", default="", help="Why; recorded on the version and in the audit trail. Required with --force."
)
@optional_flag(
    "--force",
    help="Promote even if gates 2-3 (min_f1_macro, no_regression, per_class_f1, significance) or max_ece fail.",
)
@optional_flag(
    "--despite-rollback", help="Promote a version that was rolled back from ALIAS before; recorded in the audit trail."
)
@config_options(PromotionConfig)
@user_errors
def promote_command(
    name: str, version: str, alias: str, dry_run: bool, reason: str, force: bool, despite_rollback: bool, **thresholds
) -> None:
    """Run the gates on version VERSION of NAME, then point ALIAS at it. Exit 0 promoted, 1 refused, 2 bad input.

    On a team server with --auth, a protected alias (champion) moves only for a user with MANAGE on NAME (or an
    admin); anyone else's passing gates record an approval request instead (exit 0), for `approve`."""
    from sentiment_flow import registry

    report = registry.promote(
        name,
        version,
        alias,
        config=PromotionConfig(**thresholds),
        dry_run=dry_run,
        force=force,
        reason=reason,
        despite_rollback=despite_rollback,
    )
    _print_promotion(report)


@cli.command("approve")
@click.argument("name")
@click.option("--version", "version", required=True, help="The version the pending request promotes, e.g. 3.")
@click.option("--alias", required=True, help=f"The protected alias the request moves: {', '.join(ALIASES)}.")
@click.option("--reason", default="", help="Why you approve; recorded in the audit trail beside the request's.")
@user_errors
def approve_command(name: str, version: str, alias: str, reason: str) -> None:
    """Approve the pending request (made by `promote` on a team server with --auth) to point ALIAS of NAME at
    VERSION: re-run its gates on the same frozen data with its thresholds, then move the alias, recording requester
    and approver. Takes MANAGE on NAME; the requester cannot approve. Exit 0 promoted, 1 refused, 2 bad input."""
    from sentiment_flow import registry

    _print_promotion(registry.approve(name, version, alias, reason))


def _print_promotion(report) -> None:
    """The gate table and outcome of a promotion, then exit with its code."""
    out = Console()
    if report.gates:
        out.print(_gate_table(out, report))
    out.print(in_user_syntax(report.summary), highlight=False, markup=False, soft_wrap=True)
    sys.exit(report.exit_code)


@cli.command("rollback")
@click.argument("name")
@click.option("--alias", default=CHAMPION, show_default=True, help=f"The alias to move back: {', '.join(ALIASES)}.")
@click.option("--reason", default="", help="Why; recorded in the audit trail.")
@user_errors
def rollback_command(name: str, alias: str, reason: str) -> None:
    """Point ALIAS of NAME back at its previous holder. Exit 0 done, 1 nothing to go back to or superseded,
    2 bad input."""
    from sentiment_flow import registry

    result = registry.rollback(name, alias, reason)
    Console().print(
        in_user_syntax(f"{result.summary}; now {_history_text(result.history)}"),
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    if result.exit_code:
        sys.exit(result.exit_code)


@cli.command("copy")
@click.argument("src_uri")
@click.argument("dst_name")
@user_errors
def copy_command(src_uri: str, dst_name: str) -> None:
    """Copy SRC_URI (models:/NAME/VERSION or models:/NAME@ALIAS) to a new version of DST_NAME, with lineage tags."""
    from sentiment_flow import registry

    result = registry.copy(src_uri, dst_name)
    Console().print(
        in_user_syntax(
            f"Copied {src_uri} (version {result.source_version}) to {result.model_uri}; promote it there with "
            f"`sentiment-flow promote {dst_name} --version {result.version} --alias ...`."
        ),
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


def _minute(timestamp: str) -> str:
    """`2026-11-25 10:56` from `2026-11-25T10:56:10Z`: short enough for a table column."""
    return timestamp[:16].replace("T", " ")


def _fitted(out: Console, title: str, columns: tuple[str, ...], rows: list[dict[str, str]], folds: str):
    """`rows` (column -> cell, rich markup) as one table where it fits `out` whole, else one block per row, its
    cells under one another: a value is never cut. Only the cells of column `folds` (prose, paths) may break."""
    table = Table(title=title)
    for column in columns:
        wide = column == folds
        table.add_column(column, no_wrap=not wide, overflow="fold", max_width=FOLD_WIDTH if wide else None)
    for row in rows:
        table.add_row(*row.values())
    # Measured unbounded: a measurement within the console's width would be clamped to it.
    if Measurement.get(out, out.options.update_width(sys.maxsize), table).maximum <= out.width:
        return table
    # Narrower (CI logs and pipes get 80 columns): the first cell heads its block.
    parts: list[str | Table] = [title]
    for row in rows:
        (heading, first), *rest = row.items()
        block = Table.grid(padding=(0, 2))
        block.add_column(no_wrap=True)
        block.add_column(overflow="fold")
        for column, cell in rest:
            block.add_row(f"  {column}", cell or "-")
        parts += [f"[bold]{heading}[/] {first}", block]
    return Group(*parts)


def _status_table(out: Console, report):
    """The versions of `report`, newest first, fitted to `out`."""
    rows = [
        {
            "version": row.version if row.status == "READY" else f"{row.version} ({row.status})",
            "aliases": ", ".join(row.aliases),
            **{_metric_column(key): f"{row.metrics[key]:.4f}" if key in row.metrics else "-" for key in KEY_METRICS},
            "lang": escape(row.lang),
            "base model": escape(row.base_model),  # a local path may hold [brackets], which rich would read as markup
            "created (UTC)": _minute(row.created_at),
            "promoted (UTC)": "\n".join(f"{alias} {_minute(when)}" for alias, when in row.promoted_at.items()),
        }
        for row in report.versions
    ]
    columns = (
        "version",
        "aliases",
        *map(_metric_column, KEY_METRICS),
        "lang",
        "base model",
        "created (UTC)",
        "promoted (UTC)",
    )
    return _fitted(out, f"{escape(report.name)} (newest first)", columns, rows, folds="base model")


def _gate_table(out: Console, report):
    """The gate rows of `report`, fitted to `out`."""
    rows = [
        {
            **{column: escape(getattr(gate, column)) for column in ("gate", "candidate", "champion", "threshold")},
            "result": f"[{OUTCOME_STYLE[gate.outcome]}]{gate.outcome}[/]",
            "note": escape(in_user_syntax(gate.note)),
        }
        for gate in report.gates
    ]
    title = f"Gates: {escape(report.name)} version {report.version} -> @{escape(report.alias)}"
    return _fitted(out, title, ("gate", "candidate", "champion", "threshold", "result", "note"), rows, folds="note")


def _metric_column(key: str) -> str:
    """`f1_macro` for `test_f1_macro`: every metric in the table is a test metric."""
    return key.removeprefix("test_")


def _history_text(entries) -> str:
    """`v3 <- v2 <- v1 (rollback goes to v2)`: an alias's holders, newest first."""
    chain = " <- ".join(f"v{entry.version}" for entry in entries)
    target = f"v{entries[1].version}" if len(entries) > 1 else "nowhere"
    return f"{chain} (rollback goes to {target})"
