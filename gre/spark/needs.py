"""What ``gre spark`` needs beyond gre itself, checked before any Spark code runs: PySpark
(the ``[spark]`` extra) and a Java runtime of at least :data:`MIN_JAVA` for its JVM.

Nothing here imports PySpark, so ``gre --help`` and the check itself work without it.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
from pathlib import Path

#: PySpark 4 runs on Java 17 and 21; ``predict_batch_udf`` appeared in 3.4.
MIN_PYSPARK = (4, 0)
MIN_JAVA = 17
PYSPARK_HINT = "pip install 'gre[spark]' (PySpark, pandas and pyarrow)"
JAVA_HINT = "apt-get install openjdk-17-jre-headless (Debian), or set JAVA_HOME to a JDK/JRE >= 17"


class SparkUnavailable(RuntimeError):
    """PySpark or Java is missing or too old; the message says how to install it."""


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


def pyspark_version() -> str:
    """The installed PySpark's version.

    Raises:
        SparkUnavailable: PySpark is not installed, or older than :data:`MIN_PYSPARK`.
    """
    try:
        version = importlib.metadata.version("pyspark")
    except importlib.metadata.PackageNotFoundError:
        raise SparkUnavailable(f"PySpark is not installed: {PYSPARK_HINT}") from None
    if _version_tuple(version) < MIN_PYSPARK:
        wanted = ".".join(map(str, MIN_PYSPARK))
        raise SparkUnavailable(f"PySpark {version} is older than {wanted}: {PYSPARK_HINT}")
    return version


def java_executable() -> Path:
    """The ``java`` Spark will start: ``$JAVA_HOME/bin/java`` when ``JAVA_HOME`` is set (as
    ``spark-submit`` chooses), else the one on ``PATH``.

    Raises:
        SparkUnavailable: no such executable.
    """
    home = os.environ.get("JAVA_HOME")
    if home:
        java = Path(home, "bin", "java")
        if not java.is_file():
            raise SparkUnavailable(f"JAVA_HOME={home} has no bin/java: {JAVA_HINT}")
        return java
    found = shutil.which("java")
    if found is None:
        raise SparkUnavailable(f"no Java runtime (java is not on PATH): {JAVA_HINT}")
    return Path(found)


def java_major(java: Path) -> int:
    """The feature release of ``java`` (17 for ``openjdk version "17.0.15"``), from
    ``java -version`` (which prints to stderr).

    Raises:
        SparkUnavailable: it does not run or its version cannot be read.
    """
    try:
        done = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SparkUnavailable(f"{java} -version failed ({exc}): {JAVA_HINT}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if done.returncode != 0 or match is None:
        raise SparkUnavailable(f"{java} -version gave no version: {JAVA_HINT}")
    first, second = int(match.group(1)), int(match.group(2) or 0)
    return second if first == 1 else first  # "1.8.0" is Java 8


def require_spark() -> str:
    """Check PySpark and Java; returns ``"PySpark X, Java N"``.

    Raises:
        SparkUnavailable: either is missing or too old (the message says how to get it).
    """
    version = pyspark_version()
    java = java_executable()
    major = java_major(java)
    if major < MIN_JAVA:
        raise SparkUnavailable(f"{java} is Java {major}; Spark 4 needs >= {MIN_JAVA}: {JAVA_HINT}")
    return f"PySpark {version}, Java {major}"
