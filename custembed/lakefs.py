"""The one file-system layer of the lake: every path under ``project.lake_dir`` is a URI handled here.

Python reads and writes lake files through fsspec, Spark through Hadoop's file
systems; both must be handed the same fully qualified URI, or a scheme-less
path written by Spark lands on ``fs.defaultFS`` (HDFS on YARN) while Python
looks for it on the local disk. So:

* :func:`qualify` turns whatever the user wrote into a URI with a scheme; a
  plain path becomes an absolute ``file://`` URI (resolved against the working
  directory).
* :func:`spark_uri` is the form for Spark (Hadoop's names: ``s3a://``);
  :func:`fs_and_path` the fsspec file system and path for Python (``s3://``).
* Everything else (``exists``, ``read_text``, ``put_dir`` …) takes a URI.

Backends are the user's to install for their store (``s3fs``, ``adlfs``,
``gcsfs``; HDFS needs pyarrow's libhdfs with ``HADOOP_HOME`` and ``CLASSPATH``);
a missing one is a ``ConfigError`` naming the package. No pyspark import here:
torchrun processes and Spark's Python workers use this module too.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import uuid
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import urlsplit

from custembed.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow.fs
    from fsspec import AbstractFileSystem

LOCAL = "file"
# Hadoop's scheme names (what Spark needs) → fsspec's (what Python needs)
_FSSPEC_SCHEMES = {"s3a": "s3", "s3n": "s3", "abfss": "abfs", "wasbs": "az", "wasb": "az"}
# what to install when fsspec cannot load a scheme's file system
_PACKAGES = {
    "s3": "s3fs",
    "abfs": "adlfs",
    "az": "adlfs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "hdfs": "pyarrow with libhdfs (set HADOOP_HOME, JAVA_HOME and CLASSPATH=$(hadoop classpath --glob))",
    "dbfs": "requests (and DATABRICKS_HOST, DATABRICKS_TOKEN)",
}
# Databricks mounts DBFS on every node of its clusters: plain local files there
_DBFS_MOUNT = "/dbfs"


def qualify(path_or_uri: str | os.PathLike[str]) -> str:
    """A URI with a scheme: a plain path → absolute ``file://`` URI; a URI as given, without a trailing slash.

    ``dbfs:/x`` keeps its single slash (Databricks' form); Hadoop's ``s3a://`` stays ``s3a://``.
    """
    text = os.fspath(path_or_uri)
    found = _scheme(text)
    if not found or found == LOCAL:
        # not Path.as_uri(): Hadoop would read its %-escapes as literal characters
        return "file://" + str(Path(local_path(text) or "/").resolve())
    if not urlsplit(text).path.strip("/"):
        return text  # a bucket or name-node root: keep its slashes
    return text.rstrip("/")


def _scheme(text: str) -> str:
    """The URI scheme, lower-cased; '' for a plain path (a Windows drive letter counts as a path)."""
    scheme = urlsplit(text).scheme
    return scheme.lower() if len(scheme) > 1 else ""


def scheme(uri: str) -> str:
    """The scheme of a path or URI: ``file`` for a plain path."""
    return _scheme(os.fspath(uri)) or LOCAL


def local_path(uri: str) -> str | None:
    """The local file-system path of a ``file://`` URI (or a plain path, or ``dbfs:/`` where DBFS is mounted);
    None for any other store."""
    text = os.fspath(uri)
    found = _scheme(text)
    if not found:
        return str(Path(text).expanduser().resolve())
    rest = text[len(found) + 1 :]
    if found == LOCAL:
        # file:///p (URI form) or file:/p (Hadoop's qualified form); not urlsplit: '#' and '?' are file name characters
        if rest.startswith("//"):
            host, _, path = rest[2:].partition("/")
            if host not in ("", "localhost"):
                raise ConfigError(f"{text}: a file URI names no host (file:///path)")
            rest = "/" + path
        return rest or "/"
    if found == "dbfs" and Path(_DBFS_MOUNT).is_dir():
        return _DBFS_MOUNT + "/" + rest.lstrip("/")
    return None


def is_local(uri: str) -> bool:
    """Whether ``uri`` is a file on this machine's disk (no copy needed to hand it to local-only libraries)."""
    return local_path(uri) is not None


def spark_uri(path_or_uri: str | os.PathLike[str]) -> str:
    """The fully qualified URI to give Spark (Hadoop's scheme names), so ``fs.defaultFS`` never redirects it."""
    return qualify(path_or_uri)


def mlflow_uri(path_or_uri: str | os.PathLike[str]) -> str:
    """The URI for MLflow's artifact stores: boto3's ``s3://`` for Hadoop's ``s3a://``/``s3n://``, else as Spark's."""
    uri = qualify(path_or_uri)
    found = _scheme(uri)
    return "s3" + uri[len(found) :] if found in ("s3a", "s3n") else uri


def join(uri: str, *parts: str) -> str:
    """``uri`` with path ``parts`` appended (``/``-separated whatever the store)."""
    base = qualify(uri)
    cleaned = [part.strip("/") for part in parts if part.strip("/")]
    if not cleaned:
        return base
    return base.rstrip("/") + "/" + "/".join(cleaned)


def parent(uri: str) -> str:
    """The directory holding ``uri``."""
    base = qualify(uri)
    head, _, _ = base.rstrip("/").rpartition("/")
    return head if urlsplit(head).path else base


def name(uri: str) -> str:
    """The last component of ``uri``."""
    return posixpath.basename(qualify(uri).rstrip("/"))


def fs_and_path(uri: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec file system of ``uri`` and the path within it; ``ConfigError`` naming the package to install."""
    import fsspec.core
    from fsspec.implementations.local import LocalFileSystem

    text = qualify(uri)
    local = local_path(text)
    if local is not None:
        return LocalFileSystem(), local
    found = _scheme(text)
    fsspec_scheme = _FSSPEC_SCHEMES.get(found, found)
    fsspec_uri = fsspec_scheme + text[len(found) :]
    try:
        fs, path = fsspec.core.url_to_fs(fsspec_uri)
    except ImportError as e:
        package = _PACKAGES.get(fsspec_scheme, f"the fsspec implementation of {fsspec_scheme}://")
        raise ConfigError(f"{text}: {found}:// paths need {package} installed ({e})") from e
    except ValueError as e:  # "Protocol not known"
        known = _PACKAGES.get(fsspec_scheme)
        hint = f"install {known}" if known else "use a file://, hdfs://, s3a://, abfss://, gs:// or dbfs:/ URI"
        raise ConfigError(f"{text}: no file system for {found}:// ({hint})") from e
    except OSError as e:  # pyarrow's HDFS client without libjvm/libhdfs
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{text}: cannot connect to {found}:// ({first}); needs {_PACKAGES.get(found, found)}") from e
    return fs, str(path)


def _to_uri(base_uri: str, base_path: str, path: str) -> str:
    """The URI of ``path`` (a path of ``base_uri``'s file system under ``base_path``)."""
    relative = posixpath.relpath(path, base_path)
    return base_uri if relative == "." else join(base_uri, relative)


def exists(uri: str) -> bool:
    fs, path = fs_and_path(uri)
    return bool(fs.exists(path))


def isdir(uri: str) -> bool:
    fs, path = fs_and_path(uri)
    return bool(fs.isdir(path))


def isfile(uri: str) -> bool:
    fs, path = fs_and_path(uri)
    return bool(fs.isfile(path))


def makedirs(uri: str) -> None:
    """Create the directory and its parents (object stores have none: nothing to do there)."""
    fs, path = fs_and_path(uri)
    fs.makedirs(path, exist_ok=True)


def read_text(uri: str) -> str:
    fs, path = fs_and_path(uri)
    with fs.open(path, "rb") as stream:
        return bytes(stream.read()).decode("utf-8")


def write_text(uri: str, text: str) -> None:
    """Write ``text`` (UTF-8); on a local disk to a temporary file next to it, then renamed, so a reader never
    sees half of it. Object stores make a whole object visible at once anyway."""
    local = local_path(uri)
    if local is None:
        fs, path = fs_and_path(uri)
        parent_path = posixpath.dirname(path)
        if parent_path:
            fs.makedirs(parent_path, exist_ok=True)
        with fs.open(path, "wb") as stream:
            stream.write(text.encode("utf-8"))
        return
    target = Path(local)
    target.parent.mkdir(parents=True, exist_ok=True)
    # not tempfile.mkstemp: its 0600 mode would hide the file from the analysts' group
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with temporary.open("x", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def open_input(uri: str) -> IO[bytes]:
    """A binary, seekable reader of the file at ``uri`` (``torch.load`` takes it)."""
    fs, path = fs_and_path(uri)
    stream: IO[bytes] = fs.open(path, "rb")
    return stream


def open_output(uri: str) -> IO[bytes]:
    """A binary writer of the file at ``uri``, its directory created (``torch.save`` takes it)."""
    fs, path = fs_and_path(uri)
    parent_path = posixpath.dirname(path)
    if parent_path:
        fs.makedirs(parent_path, exist_ok=True)
    stream: IO[bytes] = fs.open(path, "wb")
    return stream


def ls(uri: str) -> list[str]:
    """URIs of the entries directly in the directory ``uri``, sorted; [] when it does not exist."""
    fs, path = fs_and_path(uri)
    if not fs.isdir(path):
        return []
    base = qualify(uri)
    entries = fs.ls(path, detail=False)
    return sorted(_to_uri(base, path, str(entry)) for entry in entries if str(entry).rstrip("/") != path.rstrip("/"))


def glob(uri: str, pattern: str) -> list[str]:
    """URIs under the directory ``uri`` matching ``pattern`` (``*/source.json``), sorted."""
    fs, path = fs_and_path(uri)
    base = qualify(uri)
    found = fs.glob(path.rstrip("/") + "/" + pattern.lstrip("/"))
    return sorted(_to_uri(base, path, str(match)) for match in found)


def rm(uri: str, *, recursive: bool = False, missing_ok: bool = True) -> None:
    """Remove a file, or a directory with ``recursive``; a missing one is fine unless ``missing_ok`` is false."""
    fs, path = fs_and_path(uri)
    if not fs.exists(path):
        if missing_ok:
            return
        raise FileNotFoundError(uri)
    fs.rm(path, recursive=recursive)


def move(source: str, target: str) -> None:
    """Rename ``source`` (file or directory) to ``target``; atomic on a local (POSIX) disk and on HDFS.

    On object stores a directory move is a copy and a delete: a reader may see a partial
    target, so writers there put their marker file (``state.pt``, ``_SUCCESS``) last.
    """
    source_local, target_local = local_path(source), local_path(target)
    if source_local is not None and target_local is not None:
        os.replace(source_local, target_local)
        return
    fs, source_path = fs_and_path(source)
    _, target_path = fs_and_path(target)
    fs.mv(source_path, target_path, recursive=True)


def get_dir(uri: str, local_dir: str | None = None) -> str:
    """A local directory holding the files of directory ``uri``: the directory itself when it is local (no copy),
    else a download into ``local_dir`` (default: a new temporary directory)."""
    local = local_path(uri)
    if local is not None:
        return local
    target = local_dir or tempfile.mkdtemp(prefix="custembed-lake-")
    Path(target).mkdir(parents=True, exist_ok=True)
    fs, path = fs_and_path(uri)
    if not fs.isdir(path):
        raise FileNotFoundError(f"{uri} is not a directory")
    # trailing slashes on both sides: the directory's contents go into target, not a subdirectory of it
    fs.get(path.rstrip("/") + "/", target.rstrip("/") + "/", recursive=True)
    return target


def put_dir(local_dir: str | os.PathLike[str], uri: str) -> None:
    """Copy the files of a local directory to directory ``uri`` (nothing to do when they are the same)."""
    source = Path(local_dir).resolve()
    local = local_path(uri)
    if local is not None and Path(local).resolve() == source:
        return
    fs, path = fs_and_path(uri)
    fs.makedirs(path, exist_ok=True)
    fs.put(str(source) + "/", path.rstrip("/") + "/", recursive=True)


def pyarrow_filesystem(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """(pyarrow file system, path) of ``uri`` for ``pyarrow.dataset`` reads: pyarrow's own for local files,
    the fsspec one wrapped for every other store."""
    import pyarrow.fs

    local = local_path(uri)
    if local is not None:
        return pyarrow.fs.LocalFileSystem(), local
    fs, path = fs_and_path(uri)
    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)), path
