"""Write the LAMMPS files examples/lammps/in.ocp reads, from any ASE-readable structure.

    python examples/lammps/make_data.py tests/data/structures/v1.extxyz --out /tmp/ocp_lammps
    python examples/lammps/make_data.py --bulk Cu --repeat 3 --out /tmp/ocp_lammps   # fcc bulk, 108 atoms

Writes OUT/data.lmp (atom_style atomic, cell rotated to LAMMPS's
lower-triangular form), OUT/system.lmp (boundary + read_data),
OUT/coeff.lmp (``pair_coeff * * El[:TAG] ...``: one label per atom type; the
OCP tag rides on the type) and OUT/structure.extxyz (the same structure, for
md_host and the Python runtime).
"""

import argparse
from pathlib import Path

import numpy as np
from ase.build import bulk
from ase.io import read, write

from ocpdeploy.exporter import lammps_host


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("structure", nargs="?", help="extxyz (or any ASE format) structure; first frame")
    parser.add_argument("--bulk", help="instead of a file: cubic fcc bulk of this element (e.g. Cu)")
    parser.add_argument("--lattice", type=float, default=3.61, help="fcc lattice constant for --bulk (A)")
    parser.add_argument("--repeat", type=int, nargs="+", default=[3], help="repetitions for --bulk (1 or 3 ints)")
    parser.add_argument("--rattle", type=float, default=0.0, help="random displacement amplitude (A)")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args()

    if args.bulk:
        repeat = args.repeat * 3 if len(args.repeat) == 1 else args.repeat
        atoms = bulk(args.bulk, "fcc", a=args.lattice, cubic=True).repeat(tuple(repeat))
    elif args.structure:
        atoms = read(args.structure, index=0)
    else:
        parser.error("give a structure file or --bulk")
    if args.rattle > 0:
        atoms.rattle(args.rattle, seed=1)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lammps_atoms = lammps_host.lammps_cell(atoms)
    if not lammps_atoms.has("tags"):
        lammps_atoms.set_tags(np.zeros(len(lammps_atoms), dtype=int))
    types = lammps_host.write_lammps_data(out / "data.lmp", lammps_atoms)
    (out / "system.lmp").write_text(f"boundary {lammps_host.lammps_boundary(lammps_atoms)}\nread_data data.lmp\n")
    (out / "coeff.lmp").write_text("pair_coeff * * " + " ".join(types) + "\n")
    write(out / "structure.extxyz", lammps_atoms)
    print(f"{len(atoms)} atoms, types {' '.join(types)}, boundary {lammps_host.lammps_boundary(lammps_atoms)} -> {out}")


if __name__ == "__main__":
    main()
