"""Suite definitions and the optimization guide's expected tables, as data."""

from pathlib import Path

DIR = Path(__file__).resolve().parent  # the shipped suites, texts and expectations
