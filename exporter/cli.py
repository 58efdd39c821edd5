"""``export-model``: thin command line over ``ocpdeploy.exporter``.

    export-model CHECKPOINT --format torchscript|onnx|aoti -o OUTPUT [--dtype float32|float64]
                 [--forces direct|gradient|conservative] [--device cpu|cuda] [--no-verify]
    export-model info ARTIFACT
    export-model bench ARTIFACT [--sizes 100,1000] [--device cpu|cuda] [--repeats 5] [--warmup 1]
                 [--threads N] [--markdown FILE]

Every failure is one line on stderr and a non-zero exit code.
"""

import json
import sys
from typing import List, Optional

import click

from ocpdeploy.runtime.keys import FORCES_MODES

EXIT_FAILURE = 1
BENCH_SIZES = "100,1000"
BENCH_REPEATS = 5
BENCH_WARMUP = 1


@click.command(name="export-model")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--format", "format_", type=click.Choice(["torchscript", "onnx", "aoti"]), default="torchscript", show_default=True)
@click.option("-o", "--output", required=True, help="artifact path (.pt for torchscript, .onnx for onnx, .pt2 for aoti)")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@click.option("--forces", type=click.Choice(FORCES_MODES), default=None, help="default: the checkpoint's own (direct or gradient)")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="aoti only: the device the package is compiled for (it runs only there)")
@click.option("--no-verify", is_flag=True, help="skip the check of the artifact against the eager rewrite")
def export_command(
    checkpoint: str, format_: str, output: str, dtype: str, forces: Optional[str], device: str, no_verify: bool
) -> None:
    """Export an OCP/fairchem trainer CHECKPOINT (PaiNN, GemNet-OC) to a deployable artifact."""
    from .export import export_checkpoint

    result = export_checkpoint(checkpoint, output, format=format_, dtype=dtype, forces=forces, verify=not no_verify, device=device)
    metadata = result.metadata
    line = f"wrote {result.path}: {metadata['model_kind']} {format_} {dtype}, forces {metadata['forces']}, cutoff {metadata['cutoff']} A"
    if result.max_energy_error is not None:
        line += f"; verified on the probe: |dE| {result.max_energy_error:.2e} eV, max|dF| {result.max_forces_error:.2e} eV/A"
    click.echo(line)


@click.command(name="info")
@click.argument("artifact", type=click.Path(dir_okay=False))
def info_command(artifact: str) -> None:
    """Print an artifact's metadata."""
    from ocpdeploy.runtime import load_model

    click.echo(json.dumps(load_model(artifact).metadata, indent=2))


@click.command(name="bench")
@click.argument("artifact", type=click.Path(dir_okay=False))
@click.option("--sizes", default=BENCH_SIZES, show_default=True, help="comma-separated atom counts (fcc Cu bulk, closest cubic repeat)")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--repeats", type=int, default=BENCH_REPEATS, show_default=True, help="timed calls per size (median reported)")
@click.option("--warmup", type=int, default=BENCH_WARMUP, show_default=True, help="untimed calls per size before the timed ones")
@click.option("--threads", type=int, default=None, help="torch threads; for ONNX also the intra-op threads")
@click.option("--markdown", type=click.Path(dir_okay=False), default=None, help="also write the table as markdown to FILE")
def bench_command(
    artifact: str, sizes: str, device: str, repeats: int, warmup: int, threads: Optional[int], markdown: Optional[str]
) -> None:
    """Time one energy+forces call of ARTIFACT (.pt or .onnx) per structure size: graph, model, total, peak memory."""
    from .bench import Benchmark, check_counts, format_markdown, format_table, parse_sizes

    atom_counts = parse_sizes(sizes)
    check_counts(repeats, warmup)
    with Benchmark(artifact, device=device, threads=threads) as benchmark:
        with click.progressbar(length=len(atom_counts) * (repeats + warmup), label="bench", file=sys.stderr) as bar:

            def step(label: str) -> None:
                bar.label = label
                bar.update(1)

            results = benchmark.run(atom_counts, repeats, warmup, progress=step)
        description = benchmark.description(repeats, warmup)
    click.echo(format_table(description, results))
    if markdown is not None:
        with open(markdown, "w") as file:
            file.write(format_markdown(description, results))


SUBCOMMANDS = {"info": info_command, "bench": bench_command}


def main(argv: Optional[List[str]] = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = export_command
    if arguments and arguments[0] in SUBCOMMANDS:
        command = SUBCOMMANDS[arguments.pop(0)]
    try:
        command.main(args=arguments, prog_name="export-model" if command is export_command else f"export-model {command.name}", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(EXIT_FAILURE)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except Exception as error:  # noqa: BLE001 - every failure is one line, never a traceback
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        click.echo(f"export-model: error: {message}", err=True)
        sys.exit(EXIT_FAILURE)


if __name__ == "__main__":
    main()
