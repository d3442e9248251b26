"""``edgekit doctor`` (edgekit.doctor)."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.cli.app import command, echo_json, existing_path, json_option, status

__all__ = ["doctor_cmd"]


@command("doctor")
@click.argument("model", type=existing_path(dir_okay=False), required=False)
@click.option("--provider", "providers", multiple=True, metavar="NAME",
              help="onnxruntime provider to check MODEL on (repeatable; cuda, openvino, "
              "CUDAExecutionProvider ...). Default: every provider of this onnxruntime build "
              "but TensorRT.")
@click.option("--plugin-ep", "plugin_eps", multiple=True, metavar="NAME=LIBRARY",
              help="Register a plugin execution provider library first (repeatable).")
@json_option()
def doctor_cmd(model: Path | None, providers: tuple[str, ...], plugin_eps: tuple[str, ...],
               as_json: bool) -> None:
    """What this machine offers for inference and, with MODEL, where its nodes run.

    \b
    The machine: CPU model and instruction set (AVX2, AVX-512 VNNI, BF16, AMX ...),
    engines and versions, onnxruntime's execution providers and EP devices, plugin
    EPs, OpenVINO devices, GPUs; a missing GPU or EP is reported, not an error.
    With MODEL (.onnx/.ort): per provider, the nodes it takes and its share of the
    node time in a real profiled session (seeded synthetic inputs), the provider
    each node ran on, the ops each OpenVINO device supports, and the engine,
    providers and settings that engine="auto" picks.
    """
    from edgekit.doctor import doctor, format_doctor, parse_plugin_ep, provider_names

    report = doctor(model, providers=provider_names(providers),
                    plugin_eps=[parse_plugin_ep(p) for p in plugin_eps], progress=status)
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(format_doctor(report))
