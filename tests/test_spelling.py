"""One spelling across the book and the package: US English (issue 15), as PyTorch's and Keras' docs use.

Identifiers of other libraries are unaffected (matplotlib's "Greys" colormap); the list holds the UK forms
that crept in before, so a new one fails here with its file and line.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UK = (
    "behaviour colour synchronisation synchronise synchronised synchronises synchronising regulariser "
    "regularisation regularise regularised minimise minimised minimises minimising minimisation maximise "
    "maximises centred centre centres summarise summarised summarises initialisation initialised initialise "
    "initialising normalisation normalise normalised normalises honoured neighbour neighbours neighbourhood "
    "labelling labelled relabelled relabelling modelling grey favour optimise optimised optimisation "
    "standardise standardised standardisation generalise generalises recognise utilise organise analyse "
    "analysed cancelled travelled artefact artefacts whilst catalogue licence parallelise vectorise "
    "vectorised "
    "randomised randomise serialised serialise serialisation quantised"
).split()
WORD = re.compile(r"\b(" + "|".join(UK) + r")\b", re.IGNORECASE)
FILES = [
    *ROOT.glob("book/*.md"),
    *ROOT.glob("companion/dltricks/**/*.py"),
    *ROOT.glob("tools/**/*.py"),
    *ROOT.glob("tests/**/*.py"),
    ROOT / "README.md",
]


def test_us_spelling_everywhere():
    found = [
        f"{path.relative_to(ROOT)}:{n}: {match.group(0)}"
        for path in FILES
        if path.name != "test_spelling.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for match in WORD.finditer(line)
    ]
    assert not found, "UK spellings (the book uses US English):\n" + "\n".join(found)
