"""``python -m gre.spark INPUT OUTPUT ...``: ``gre spark`` as a script, the file to hand
``spark-submit`` (docs/spark.md), since it takes a Python file rather than a command."""

from gre.spark.command import spark

if __name__ == "__main__":
    spark(prog_name="gre spark")
