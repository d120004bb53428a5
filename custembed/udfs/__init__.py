"""Pandas-UDF factories over plain numpy/pandas cores (the cores are testable without Spark)."""
