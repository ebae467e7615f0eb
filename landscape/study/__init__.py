"""The paper's digits study (``make demo`` / ``landscape demo`` / ``python -m landscape.study``), apart from
the library it uses. Imports run one way, top to bottom:

* :mod:`.experiments` — the pipeline: train, analyse, slice, write the tables, figure and report;
  ``main(argv)`` is the command line;
* :mod:`.docblocks` — the generated result blocks of README.md and docs/findings.md, rendered from a
  study's CSVs (``--readme RUN_DIR``);
* :mod:`.findings` — per-run and per-variant findings read from the runs on disk, and their Markdown;
* :mod:`.claims` — the abstract's claims tested on the per-run findings, and their Markdown;
* :mod:`._format` — ``pm(mean, spread, digits)``, the one ``±`` formatter of these tables.

The Spearman ρ of the claims is :func:`landscape.diagnose.spearman`, the diagnosis' own.
"""
