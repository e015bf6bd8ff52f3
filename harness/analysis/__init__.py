"""Reading runs back: results as a DataFrame with statistics, quality verdicts, cost against length,
change points across runs, and run-to-run comparisons. What reports and the CLI build on; it measures
nothing and drives nothing. Kept empty so that importing one module of this package loads no other.
"""
