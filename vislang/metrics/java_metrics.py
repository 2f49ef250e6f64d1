"""METEOR and SPICE through their official jars, only when Java and the jars are present.

vislang never substitutes another implementation for these metrics and never downloads anything: when
Java, a jar, or (for SPICE) the Stanford CoreNLP models are missing, the metric is reported as
unavailable with the reason. The jars are looked up in ``$VISLANG_METEOR_JAR`` / ``$VISLANG_SPICE_JAR``,
then in an installed pycocoevalcap package (which ships ``meteor-1.5.jar`` and ``spice-1.0.jar``; SPICE
additionally needs ``lib/stanford-corenlp-3.6.0.jar`` and its models jar, which pycocoevalcap downloads on
first use and vislang does not).

Both metrics take the captions tokenised by :mod:`vislang.metrics.ptb_tokenizer`, as pycocoevalcap does.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vislang.errors import ExternalToolError
from vislang.utils.io import progress

METEOR_JAR_NAME = "meteor-1.5.jar"
SPICE_JAR_NAME = "spice-1.0.jar"
SPICE_CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


@dataclass(frozen=True)
class JavaMetricResult:
    """Corpus score and per-image scores (in the order of the evaluated images)."""

    corpus: float
    per_image: list[float]


def _pycocoevalcap_dir() -> Path | None:
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def java_executable() -> str | None:
    """Path of ``java`` on PATH, or None."""
    return shutil.which("java")


def _find_jar(env_var: str, subdir: str, name: str) -> Path | None:
    """``$env_var`` if set (and a file), else pycocoevalcap's ``<subdir>/<name>``, if it exists."""
    env = os.environ.get(env_var)
    if env:
        return Path(env) if Path(env).is_file() else None
    package = _pycocoevalcap_dir()
    jar = package / subdir / name if package else None
    return jar if jar and jar.is_file() else None


def find_meteor_jar() -> Path | None:
    """``$VISLANG_METEOR_JAR`` or pycocoevalcap's ``meteor/meteor-1.5.jar``, if it exists."""
    return _find_jar("VISLANG_METEOR_JAR", "meteor", METEOR_JAR_NAME)


def find_spice_jar() -> Path | None:
    """``$VISLANG_SPICE_JAR`` or pycocoevalcap's ``spice/spice-1.0.jar``, if it exists."""
    return _find_jar("VISLANG_SPICE_JAR", "spice", SPICE_JAR_NAME)


def meteor_unavailable_reason() -> str | None:
    """Why METEOR cannot run here, or None when it can."""
    if java_executable() is None:
        return "Java is not installed (METEOR runs only through the official meteor-1.5.jar)"
    if find_meteor_jar() is None:
        return f"{METEOR_JAR_NAME} not found (install pycocoevalcap or set VISLANG_METEOR_JAR)"
    return None


def spice_unavailable_reason() -> str | None:
    """Why SPICE cannot run here, or None when it can."""
    if java_executable() is None:
        return "Java is not installed (SPICE runs only through the official spice-1.0.jar)"
    jar = find_spice_jar()
    if jar is None:
        return f"{SPICE_JAR_NAME} not found (install pycocoevalcap or set VISLANG_SPICE_JAR)"
    missing = [name for name in SPICE_CORENLP_JARS if not (jar.parent / "lib" / name).is_file()]
    if missing:
        return (f"SPICE needs the Stanford CoreNLP 3.6.0 jars in {jar.parent / 'lib'} ({', '.join(missing)} "
                "missing); vislang does not download them")
    return None


def _meteor_line(hypothesis: str, references: Sequence[str]) -> str:
    """One ``SCORE`` request line of the jar's stdio protocol."""
    hypothesis = hypothesis.replace("|||", "").replace("  ", " ")
    return " ||| ".join(["SCORE", " ||| ".join(references), hypothesis])


def meteor(references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, Sequence[str]],
           timeout: float = 3600.0) -> JavaMetricResult:
    """METEOR 1.5 (``-l en -norm``) of tokenised captions, as pycocoevalcap computes it.

    Args:
        references: ``{image_id: [tokenised reference, ...]}``.
        candidates: ``{image_id: [tokenised candidate]}``, same ids.
        timeout: Seconds before the jar is given up on.

    Raises:
        ExternalToolError: Java or the jar is missing, or the jar fails.
    """
    reason = meteor_unavailable_reason()
    if reason:
        raise ExternalToolError(f"METEOR unavailable: {reason}")
    jar = find_meteor_jar()
    assert jar is not None
    command = [java_executable() or "java", "-jar", "-Xmx2G", jar.name, "-", "-", "-stdio", "-l", "en", "-norm"]
    ids = list(references)
    requests = [_meteor_line(candidates[i][0], references[i]) for i in ids]
    process = subprocess.Popen(command, cwd=jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, encoding="utf-8")
    assert process.stdin is not None and process.stdout is not None

    def write_requests() -> None:
        try:
            for line in requests:
                process.stdin.write(line + "\n")
            process.stdin.flush()
        except BrokenPipeError:
            pass

    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        writer = threading.Thread(target=write_requests, daemon=True)
        writer.start()  # a thread, so that a full stdout pipe cannot block the requests
        stats = [process.stdout.readline().strip() for _ in progress(ids, desc="METEOR", unit="image")]
        writer.join()
        if any(not s for s in stats):
            raise ExternalToolError(f"METEOR jar stopped answering: {process.stderr.read()[-2000:]}")
        process.stdin.write("EVAL ||| " + " ||| ".join(stats) + "\n")
        process.stdin.flush()
        per_image = [float(process.stdout.readline().strip()) for _ in ids]
        corpus = float(process.stdout.readline().strip())
    except (ValueError, OSError) as e:
        raise ExternalToolError(f"METEOR jar failed: {e}") from e
    finally:
        timer.cancel()
        if process.stdin and not process.stdin.closed:
            process.stdin.close()
        process.kill()
        process.wait()
    return JavaMetricResult(corpus=corpus, per_image=per_image)


def spice(references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, Sequence[str]],
          timeout: float = 3600.0) -> JavaMetricResult:
    """SPICE (F-score of all tuples) through the official jar, when its CoreNLP jars are present.

    Raises:
        ExternalToolError: Java, the jar or the CoreNLP jars are missing, or the jar fails.
    """
    reason = spice_unavailable_reason()
    if reason:
        raise ExternalToolError(f"SPICE unavailable: {reason}")
    jar = find_spice_jar()
    assert jar is not None
    ids = list(references)
    with tempfile.TemporaryDirectory(prefix="vislang-spice-") as tmp:
        tmp_dir = Path(tmp)
        inputs = [{"image_id": i, "test": candidates[i][0], "refs": list(references[i])} for i in ids]
        (tmp_dir / "input.json").write_text(json.dumps(inputs), encoding="utf-8")
        command = [java_executable() or "java", "-jar", "-Xmx8G", jar.name, str(tmp_dir / "input.json"),
                   "-cache", str(tmp_dir / "cache"), "-out", str(tmp_dir / "output.json"), "-subset", "-silent"]
        try:
            subprocess.run(command, cwd=jar.parent, check=True, capture_output=True, timeout=timeout)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
            raise ExternalToolError(f"SPICE jar failed: {e}") from e
        results = json.loads((tmp_dir / "output.json").read_text(encoding="utf-8"))
    by_id = {str(r["image_id"]): r["scores"]["All"]["f"] for r in results}
    per_image = [float(by_id[str(i)]) if by_id.get(str(i)) is not None else float("nan") for i in ids]
    # The mean over images, NaN if any image has none (as pycocoevalcap reports it).
    return JavaMetricResult(corpus=sum(per_image) / len(per_image) if per_image else float("nan"),
                            per_image=per_image)
