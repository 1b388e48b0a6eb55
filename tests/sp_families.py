"""tests/sp_families.py — the families a slicepipe binary supports, as it lists
them: `slicepipe --version` prints the architecture registry (pipeline/arch/arch.c,
the one list of families), one family a line with the llama.cpp architecture
`slicepipe export` writes for it. Tests iterate this instead of keeping a list
of their own, so a new family is tested wherever every family is.

  families(slicepipe) -> {model_type: llama.cpp architecture, or None}, in the
                         registry's order
"""
import functools
import subprocess


@functools.lru_cache(maxsize=None)
def families(slicepipe):
    out = subprocess.run([slicepipe, "--version"], capture_output=True, text=True, check=True).stdout
    fams, inside = {}, False
    for line in out.splitlines():
        if line.startswith("families"):
            inside = True
        elif inside and line.startswith("  "):
            mt, arch = line.split()
            fams[mt] = None if arch == "-" else arch
        else:
            inside = False
    if not fams:
        raise RuntimeError(f"{slicepipe} --version lists no families:\n{out}")
    return fams
