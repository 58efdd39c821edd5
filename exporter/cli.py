"""``export-model``: thin command line over ``ocpdeploy.exporter``.

    export-model CHECKPOINT --format torchscript|onnx|aoti -o OUTPUT [--dtype float32|float64]
                 [--forces direct|gradient|conservative] [--device cpu|cuda] [--no-verify]
    export-model info ARTIFACT
    export-model bench ARTIFACT [--sizes 100,1000] [--device cpu|cuda] [--repeats 5] [--warmup 1]
                 [--threads N] [--markdown FILE]
    export-model --version

Every failure is one line on stderr and a non-zero exit code. Mistakes a
user can make with files (a text file or an artifact passed as the
checkpoint, a checkpoint passed to ``info``, a missing output folder, an
output suffix that does not match ``--format``) are refused before any
model is loaded, with a message naming what the file is and what was
expected. The artifact checks are the runtime's own (``load_model`` gives
the same lines), from ``ocpdeploy.runtime.filekind``.
"""

import json
import os
import sys
from importlib import metadata as distribution_metadata
from pathlib import Path
from typing import Any, Dict, List, Optional

PROG = "export-model"
# Top-level modules of the export extra; without them the command says what to install.
EXPORT_MODULES = ("click", "torch", "onnx", "onnxscript", "vesin")
MISSING_EXPORT_EXTRA = f'{PROG}: error: exporting needs torch and the export extra: pip install "ocp-deploy[export]"'
EXIT_USAGE = 2

try:
    import click
    import torch  # noqa: F401 - every export needs it; imported here so a missing torch is one line

    from .checkpoint import check_checkpoint_file
except ImportError as missing:
    if (missing.name or "").split(".")[0] not in EXPORT_MODULES:
        raise
    # A runtime-only install (ONNX Runtime without torch): one line, not a traceback.
    print(MISSING_EXPORT_EXTRA, file=sys.stderr)
    sys.exit(EXIT_USAGE)

from ocpdeploy.runtime.filekind import non_artifact_message
from ocpdeploy.runtime.keys import FORCES_MODES

DISTRIBUTION = "ocp-deploy"
# --version from a source tree that was never installed (no distribution metadata to read).
UNKNOWN_VERSION = "unknown (not installed; pip install -e . records the version)"
EXIT_FAILURE = 1
BENCH_SIZES = "100,1000"
BENCH_REPEATS = 5
BENCH_WARMUP = 1
# The suffix each format's writer requires (the runtime loads artifacts by suffix).
OUTPUT_SUFFIXES = {"torchscript": ".pt", "onnx": ".onnx", "aoti": ".pt2"}
SUBCOMMANDS_HELP = """\b
Other commands:
  export-model info ARTIFACT     print an artifact's metadata
  export-model bench ARTIFACT    time one energy+forces call per structure size
                                 (see export-model bench --help)"""


class CommandLineError(ValueError):
    """A mistake in the command line or its files; the message is one line."""


def check_output(output: str, format_: str, checkpoint: str) -> None:
    """Refuse an output path the export could not write, before any work is done."""
    path = Path(output)
    suffix = OUTPUT_SUFFIXES[format_]
    if path.suffix != suffix:
        matching = [name for name, known in OUTPUT_SUFFIXES.items() if known == path.suffix]
        hint = f" (for a {path.suffix} file use --format {matching[0]})" if matching else ""
        raise CommandLineError(f"-o {output}: --format {format_} writes a {suffix} file; name the output *{suffix}{hint}")
    folder = path.parent
    if not folder.is_dir():
        raise CommandLineError(f"-o {output}: output folder {folder} does not exist; create it first (mkdir -p {folder})")
    if not os.access(folder, os.W_OK):
        raise CommandLineError(f"-o {output}: output folder {folder} is not writable")
    if path.is_dir():
        raise CommandLineError(f"-o {output} is a folder; give the artifact's file name")
    if path.exists() and path.resolve() == Path(checkpoint).resolve():
        raise CommandLineError(f"-o {output} is the checkpoint itself; choose another output name")


def check_artifact(artifact: str) -> None:
    """Refuse, in one line, a file that is not an artifact (or has the wrong suffix for its kind)."""
    if not Path(artifact).is_file():
        raise CommandLineError(f"artifact not found: {artifact}")
    message = non_artifact_message(artifact)
    if message is not None:
        raise CommandLineError(message)


def distribution_version() -> str:
    """The installed ocp-deploy distribution's version, or ``UNKNOWN_VERSION`` when it is not installed."""
    try:
        return distribution_metadata.version(DISTRIBUTION)
    except distribution_metadata.PackageNotFoundError:
        return UNKNOWN_VERSION


def _print_version(context: click.Context, _parameter: click.Parameter, value: bool) -> None:
    """``--version``: print ``export-model (ocp-deploy) VERSION`` and stop (eager: before CHECKPOINT is required)."""
    if not value or context.resilient_parsing:
        return
    click.echo(f"{PROG} ({DISTRIBUTION}) {distribution_version()}")
    context.exit(0)


def onnx_key_order(artifact: str) -> List[str]:
    """The metadata keys in the order export-model wrote them (ONNX Runtime returns them unordered)."""
    import onnx

    model = onnx.load_model(artifact, load_external_data=False)
    return [entry.key for entry in model.metadata_props]


def ordered_metadata(metadata: Dict[str, Any], order: List[str]) -> Dict[str, Any]:
    """``metadata`` with the keys of ``order`` first, in that order, then any others."""
    ordered = {key: metadata[key] for key in order if key in metadata}
    ordered.update((key, value) for key, value in metadata.items() if key not in ordered)
    return ordered


@click.command(name="export-model", epilog=SUBCOMMANDS_HELP)
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--format", "format_", type=click.Choice(["torchscript", "onnx", "aoti"]), default="torchscript", show_default=True)
@click.option("-o", "--output", required=True, help="artifact path (.pt for torchscript, .onnx for onnx, .pt2 for aoti)")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@click.option("--forces", type=click.Choice(FORCES_MODES), default=None, help="default: the checkpoint's own (direct or gradient)")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="aoti only: the device the package is compiled for (it runs only there)")
@click.option("--domain", is_flag=True, help="aoti, PaiNN: also compile the per-layer domain-decomposition programs, for C++ hosts on several MPI ranks")
@click.option("--no-verify", is_flag=True, help="skip the check of the artifact against the eager rewrite")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version, help="print the ocp-deploy version and exit")
def export_command(
    checkpoint: str, format_: str, output: str, dtype: str, forces: Optional[str], device: str, domain: bool, no_verify: bool
) -> None:
    """Export an OCP/fairchem trainer CHECKPOINT (PaiNN, GemNet-OC) to a deployable artifact."""
    check_checkpoint_file(checkpoint)
    check_output(output, format_, checkpoint)
    from .export import export_checkpoint

    result = export_checkpoint(checkpoint, output, format=format_, dtype=dtype, forces=forces, verify=not no_verify, device=device, domain=domain)
    metadata = result.metadata
    line = f"wrote {result.path}: {metadata['model_kind']} {format_} {dtype}, forces {metadata['forces']}, cutoff {metadata['cutoff']} A"
    if result.max_energy_error is not None:
        line += f"; verified on the probe: |dE| {result.max_energy_error:.2e} eV, max|dF| {result.max_forces_error:.2e} eV/A"
    click.echo(line)


@click.command(name="info")
@click.argument("artifact", type=click.Path(dir_okay=False))
def info_command(artifact: str) -> None:
    """Print the metadata of ARTIFACT (.pt, .onnx or .pt2 made by export-model)."""
    check_artifact(artifact)
    from ocpdeploy.runtime import OnnxModel, load_model

    model = load_model(artifact)
    metadata = model.metadata
    if isinstance(model, OnnxModel):
        metadata = ordered_metadata(metadata, onnx_key_order(artifact))
    click.echo(json.dumps(metadata, indent=2))


@click.command(name="bench")
@click.argument("artifact", type=click.Path(dir_okay=False))
@click.option("--sizes", default=BENCH_SIZES, show_default=True, help="comma-separated atom counts (fcc Cu bulk, closest cubic repeat)")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--repeats", type=int, default=BENCH_REPEATS, show_default=True, help="timed calls per size (the median call is reported)")
@click.option("--warmup", type=int, default=BENCH_WARMUP, show_default=True, help="untimed calls per size before the timed ones")
@click.option("--threads", type=int, default=None, help="torch threads; for ONNX also the intra-op threads")
@click.option("--markdown", type=click.Path(dir_okay=False), default=None, help="also write the table as markdown to FILE")
def bench_command(
    artifact: str, sizes: str, device: str, repeats: int, warmup: int, threads: Optional[int], markdown: Optional[str]
) -> None:
    """Time one energy+forces call of ARTIFACT (.pt, .onnx or .pt2) per structure size: graph, model, total, peak memory."""
    from .bench import Benchmark, check_counts, format_markdown, format_table, parse_sizes

    atom_counts = parse_sizes(sizes)
    check_counts(repeats, warmup)
    check_artifact(artifact)
    with Benchmark(artifact, device=device, threads=threads) as benchmark:
        results = _run_with_progress(benchmark, atom_counts, repeats, warmup)
        description = benchmark.description(repeats, warmup)
    click.echo(format_table(description, results))
    if markdown is not None:
        with open(markdown, "w") as file:
            file.write(format_markdown(description, results))


def _run_with_progress(benchmark: Any, atom_counts: List[int], repeats: int, warmup: int) -> List[Any]:
    """``benchmark.run`` with progress on stderr: a bar on a terminal, else one line per finished size."""
    calls_per_size = repeats + warmup
    if sys.stderr.isatty():
        with click.progressbar(length=len(atom_counts) * calls_per_size, label="bench", file=sys.stderr) as bar:

            def step(label: str) -> None:
                bar.label = label
                bar.update(1)

            return benchmark.run(atom_counts, repeats, warmup, progress=step)
    done = [0]

    def line_per_size(label: str) -> None:
        # A log gets complete lines only: labels that a bar would redraw in place are not written.
        done[0] += 1
        if done[0] % calls_per_size == 0:
            click.echo(f"{label}: done", err=True)

    return benchmark.run(atom_counts, repeats, warmup, progress=line_per_size)


SUBCOMMANDS = {"info": info_command, "bench": bench_command}


def main(argv: Optional[List[str]] = None) -> None:
    """Dispatch ``info`` and ``bench`` to their commands, anything else to the export; one-line errors."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = export_command
    if arguments and arguments[0] in SUBCOMMANDS:
        command = SUBCOMMANDS[arguments.pop(0)]
    try:
        command.main(args=arguments, prog_name=PROG if command is export_command else f"{PROG} {command.name}", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(EXIT_FAILURE)
    except click.UsageError as error:
        help_command = PROG if command is export_command else f"{PROG} {command.name}"
        click.echo(f"{PROG}: error: {error.format_message().rstrip('.')} (see {help_command} --help)", err=True)
        sys.exit(error.exit_code)
    except click.ClickException as error:
        click.echo(f"{PROG}: error: {error.format_message()}", err=True)
        sys.exit(error.exit_code)
    except Exception as error:  # noqa: BLE001 - every failure is one line, never a traceback
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        click.echo(f"{PROG}: error: {message}", err=True)
        sys.exit(EXIT_FAILURE)


if __name__ == "__main__":
    main()
