"""cvo_spark: the Customer Value Optimizer on PySpark and Delta Lake."""

__version__ = "0.1.0"
