"""attnbench's tests, laid out like the package: tests/<package>/test_<module>.py
holds the tests of attnbench/<package>/<module>.py (tests/test_<module>.py those of
a top-level module), each test with the module whose behaviour it proves. A test
that proves something through the command line (CliRunner or a subprocess) is in
tests/cli/, in the file of the command it drives. tests/benchmarks/ and
tests/examples/ test the repository's folders of those names; test_layers.py
checks the package's import layers.

Shared helpers are in tests/helpers.py and shared fixtures in tests/conftest.py;
no test file imports another. tests/fixtures/ holds the test-only variants
(faulty_variants.py, imported by name) and finished runs recorded once (runs/,
written by record_runs.py) for the tests that only read a run's files.

Test files are imported by path (pytest's importlib mode: two files may share a
name in different folders); pyproject's pytest ``pythonpath`` puts tests/fixtures
and the repository root on sys.path.

Marks: ``slow`` (worker processes, subprocesses, Ray, sweeps, or over a second;
``python -m pytest -m "not slow"`` is the fast lane), ``cuda``, ``ray``.
"""
