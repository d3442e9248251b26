"""``edgekit run`` and ``edgekit package`` (edgekit.runtime, edgekit.serve.package)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgekit.cli.app import (
    command,
    echo_json,
    engine_option,
    existing_path,
    force_option,
    json_option,
)

__all__ = ["run_cmd", "package_cmd"]


@command("run")
@click.argument("model", type=existing_path())
@click.argument("input_path", metavar="[INPUT]", required=False, type=existing_path())
@click.option("--text", help="Raw text to classify (text models), instead of INPUT.")
@click.option(
    "--provider", default="auto", show_default=True, help="cpu, cuda, coreml, ... or auto."
)
@click.option("--fallback", is_flag=True, help="Fall back to the next provider if unavailable.")
@engine_option("auto", help="A registered engine (onnxruntime, openvino ...); auto: the one a "
               "tuned model stores, else onnxruntime.")
@click.option("--variant", default=None,
              help="Model packages: the variant to run (default: the one for the providers).")
@click.option("--top-k", type=click.IntRange(min=1), default=None,
              help="Labels to print per sample [default: 3; multi-label models: every label "
              "at or over --threshold].")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=0.5,  # DEFAULT_THRESHOLD
              show_default=True, help="Multi-label (sigmoid) models: the probability a label "
              "needs to be predicted.")
@json_option()
def run_cmd(
    model: Path,
    input_path: Path | None,
    text: str | None,
    provider: str,
    fallback: bool,
    engine: str,
    variant: str | None,
    top_k: int | None,
    threshold: float,
    as_json: bool,
) -> None:
    """Predict with MODEL (.onnx/.ort, or a model package folder) on INPUT: a .npy/.npz array
    or an image file.

    Images are resized and greyscaled as the model's metadata says; the stored
    preprocessing is applied. Prints the top-k labels and probabilities (a multi-label model:
    every label at or over the threshold; a model with an output per pixel or step: the
    output), and, for a model package, the variant that ran and why.
    """
    from edgekit.runtime.predict import format_predictions, predict_input

    report = predict_input(
        model, input_path, text=text, provider=provider, fallback=fallback, top_k=top_k,
        engine=engine, variant=variant, threshold=threshold,
    )
    if as_json:
        echo_json(report)
    else:
        click.echo(format_predictions(report))


@command("package")
@click.argument("model", type=existing_path())
@click.option("--triton", "repo", type=click.Path(path_type=Path), required=True,
              help="Triton model repository folder to write (KServe manifest beside it).")
@click.option("--name", default=None, help="Model name [default: the file's stem].")
@click.option("--max-batch", type=click.IntRange(min=0), default=32, show_default=True,
              help="Triton max_batch_size (0: no batching).")
@click.option("--max-delay-us", type=click.IntRange(min=0), default=2000, show_default=True,
              help="Dynamic batching: max_queue_delay_microseconds.")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True,
              help="Model instances (instance_group count).")
@click.option("--gpu", is_flag=True, help="Instances on GPUs (KIND_GPU) instead of CPUs.")
@click.option("--storage-uri", default=None,
              help="KServe storageUri of the repository [default: a pvc:// placeholder].")
@force_option()
@json_option()
def package_cmd(model: Path, repo: Path, force: bool, as_json: bool, **options: Any) -> None:
    """Package MODEL (.onnx) for Triton Inference Server and KServe.

    \b
    Writes REPO/NAME/config.pbtxt (dynamic batch dims, dynamic batching),
    REPO/NAME/1/model.onnx, REPO/NAME/labels.txt (when the model has labels)
    and REPO/NAME.kserve.yaml (an InferenceService with protocolVersion v2).
    """
    from edgekit.serve.package import PackageConfig, package_triton

    result = package_triton(model, repo, PackageConfig(**options), force=force)
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(result.summary())
