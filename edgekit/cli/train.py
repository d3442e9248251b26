"""``edgekit train`` (edgekit.recipes)."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.cli.app import (
    bar_updater,
    command,
    existing_path,
    force_option,
    progress_bar,
    verbosity,
)

__all__ = ["train_cmd"]


@command("train")
@click.argument("recipe", type=click.Choice(["image_cnn", "tabular_mlp", "text_lstm"]))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Where to save the trained model (.keras, with its edgekit metadata).")
@click.option("--data", type=existing_path(), default=None,
              help="image_cnn: folder of IDX gz files or mnist.npz; tabular_mlp: CSV (default: "
              "breast cancer); text_lstm: TSV/CSV of label and text.")
@click.option("--label", default=None, help="Class column of a CSV (tabular_mlp).")
@click.option("--epochs", type=click.IntRange(1), default=None,
              help="Epochs (recipe default: 10/60/5).")
@click.option("--batch-size", type=click.IntRange(1), default=None,
              help="Batch size (recipe default).")
@click.option("--optimizer", type=click.Choice(["adam", "rmsprop", "sgd"]), default="adam",
              show_default=True)
@click.option("--learning-rate", type=float, default=0.001, show_default=True)
@click.option("--activation", type=click.Choice(["relu", "tanh", "sigmoid"]), default=None,
              help="Hidden activation (default: relu; tanh for the text LSTM).")
@click.option("--hidden", type=click.IntRange(1), default=32, show_default=True,
              help="Hidden units (tabular_mlp).")
@click.option("--validation-split", type=float, default=0.1, show_default=True)
@click.option("--test-split", type=float, default=0.2, show_default=True,
              help="Held-out test fraction for data without a test set (CSV, text).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Use at most N train and N test examples.")
@click.option("--grid", multiple=True, metavar="NAME=V1,V2",
              help="Grid-search a hyper-parameter (repeatable), e.g. optimizer=adam,rmsprop.")
@click.option("--cv", type=click.IntRange(2), default=None,
              help="Cross-validation folds for --grid.")
@click.option("--grid-json", type=click.Path(path_type=Path), default=None,
              help="Where the grid table goes (default: OUT.grid.json).")
@force_option("Overwrite existing outputs.")
def train_cmd(recipe: str, output: Path, data: Path | None, label: str | None,
              epochs: int | None, batch_size: int | None, optimizer: str, learning_rate: float,
              activation: str | None, hidden: int, validation_split: float, test_split: float,
              seed: int, limit: int | None, grid: tuple[str, ...], cv: int | None,
              grid_json: Path | None, force: bool) -> None:
    """Train a RECIPE (image_cnn, tabular_mlp, text_lstm) and save OUT.keras."""
    import sys

    from edgekit.recipes import GridResult, TrainConfig, train_recipe

    verbose = 0 if verbosity.quiet else (1 if sys.stdout.isatty() else 2)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                         learning_rate=learning_rate, activation=activation, hidden=hidden,
                         validation_split=validation_split, test_split=test_split, seed=seed,
                         limit=limit, verbose=verbose)
    if not grid:
        result = train_recipe(recipe, config, data=data, output=output, force=force, label=label)
        assert not isinstance(result, GridResult)
        click.echo(result.summary())
        return
    from edgekit.recipes import parse_grid

    table = parse_grid(grid)
    with progress_bar("grid search") as bar:
        res = train_recipe(recipe, config, data=data, output=output, force=force, label=label,
                           grid=table, cv=cv, grid_json=grid_json, on_progress=bar_updater(bar))
    assert isinstance(res, GridResult) and res.final is not None
    click.echo(res.table())
    click.echo(f"best: {res.best}  (table: {res.json_path})")
    click.echo(res.final.summary())
