"""One module per spark-submit job, each with ``run(spark, cfg, ...)`` and ``main(argv)``."""
