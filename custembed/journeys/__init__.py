"""System B, in-store journeys: store layouts, location codes, the journey text and the shopper simulator.

Plain numpy/pandas only (no pyspark): this package runs inside Spark's Python
workers. The Spark jobs that use it are ``custembed.jobs.journeys_simulate`` and
``custembed.jobs.journeys_prepare``; ``docs/journeys.md`` describes the data side.
"""
