"""PostgreSQL for FerretDB: a throw-away cluster, run as an unprivileged user when root."""

from __future__ import annotations

import functools
import os
import pwd
import signal
import stat
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from devtools.binaries import ServiceError, find_binary, is_executable
from devtools.processes import ManagedProcess, as_user

#: The unprivileged system user that runs PostgreSQL when the caller is root (Debian's
#: ``postgresql`` package creates it).
POSTGRES_SYSTEM_USER = "postgres"
#: The PostgreSQL role (superuser, trust authentication) and the database FerretDB uses.
POSTGRES_ROLE = "postgres"
FERRETDB_DATABASE = "ferretdb"


def _postgres_tool(name: str) -> str:
    """Return PostgreSQL executable ``name`` from the directory of the ``postgres`` found.

    ``initdb`` must match the server's version, and Debian's ``/usr/bin`` wrappers of the client
    tools only add a Perl start-up.
    """
    server = Path(find_binary("postgres")).resolve()
    candidate = server.parent / name
    if is_executable(candidate):
        return str(candidate)
    return find_binary(name)


def _postgres_run_as() -> pwd.struct_passwd | None:
    """Return the user PostgreSQL must run as: ``None`` (ourselves) unless we are root.

    Raises:
        ServiceError: We are root and there is no unprivileged ``postgres`` user.
    """
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        raise ServiceError(
            "PostgreSQL refuses to run as root and there is no "
            f"'{POSTGRES_SYSTEM_USER}' user to run it as: install Debian's PostgreSQL "
            "('apt-get install postgresql', which creates that user; scripts/install_tools.sh "
            f"does so), or create one ('adduser --system --group {POSTGRES_SYSTEM_USER}'), or "
            "run as an unprivileged user"
        ) from None


def _can_traverse(directory: Path, user: pwd.struct_passwd) -> bool:
    info = directory.stat()
    if info.st_uid == user.pw_uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid in os.getgrouplist(user.pw_name, user.pw_gid):
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def _hand_over_to(data_dir: Path, user: pwd.struct_passwd) -> None:
    """Give ``data_dir`` to ``user``, who must be able to reach it.

    Raises:
        ServiceError: A parent directory is closed to ``user`` (say, a 0700 pytest temp dir).
    """
    closed = [p for p in reversed(data_dir.parents) if not _can_traverse(p, user)]
    if closed:
        raise ServiceError(
            f"PostgreSQL runs as the '{user.pw_name}' user (it refuses root), who cannot reach "
            f"{data_dir}: {', '.join(map(str, closed))} "
            f"{'is' if len(closed) == 1 else 'are'} closed to it. Put the data directory "
            f"under a directory it can traverse (e.g. one made with tempfile.mkdtemp() under "
            f"/tmp and chmod 0711), or open the path with 'chmod o+x {closed[0]}', or run as an "
            "unprivileged user"
        )
    if data_dir.stat().st_uid != user.pw_uid:
        os.chown(data_dir, user.pw_uid, user.pw_gid)


def _run_logged(
    argv: Sequence[str], log_path: Path, what: str, *, cwd: Path, user: str | None
) -> None:
    """Run a set-up command with its output appended to ``log_path``.

    Raises:
        ServiceError: It failed or took over 120 s; the message ends with its output.
    """
    with open(log_path, "ab") as log:
        start = log.tell()
        try:
            code = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                timeout=120,
                check=False,
                **as_user(user),
            ).returncode
        except subprocess.TimeoutExpired:
            code = None
    if code != 0:
        with open(log_path, "rb") as log:
            log.seek(start)
            output = log.read().decode("utf-8", "replace").strip()
        status = "timed out" if code is None else f"exited with code {code}"
        raise ServiceError(f"{what} {status}; its output ({log_path}):\n{output}")


def _pg_isready(host: str, port: int) -> bool:
    argv = [
        _postgres_tool("pg_isready"),
        "-h", host, "-p", str(port), "-U", POSTGRES_ROLE, "-d", "postgres", "-t", "1",
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, timeout=5, check=False).returncode == 0


def _psql(host: str, port: int, sql: str, *, database: str = "postgres") -> str:
    argv = [
        _postgres_tool("psql"),
        "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
        "-h", host, "-p", str(port), "-U", POSTGRES_ROLE, "-d", database,
        "-c", sql,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env, check=False)
    if result.returncode != 0:
        raise ServiceError(f"psql {sql!r} failed: {result.stderr.strip()}")
    return result.stdout.strip()


#: FerretDB 1.24 pushes a filter on ``_id`` (or ``status``) down as ``_jsonb->'_id' @> '"…"'``,
#: which its own btree index on ``_jsonb->'_id'`` cannot serve: every read and update by ``_id``
#: scanned the whole table (22 ms of PostgreSQL CPU per lookup at 10,000 emails, growing with the
#: collection). A GIN index on the same expression serves containment; this event trigger adds
#: one for ``_id`` and ``status`` to every table FerretDB creates, and for the fields ListEmails
#: filters on (``recipients``, ``tags``, ``metadata_pairs``, ``provider``, ``idempotency_key``)
#: and walks (``list_buckets``) — except where a collection is never filtered by them
#: (``mailroom_gin_fields``): an email turn is found by ``_id`` or its lease buckets, an
#: idempotency key by ``_id``. Every index is written by every insert, a field the document lacks
#: included, and a turn is inserted for each claim: its eight GIN indexes were six too many.
#: (With the server's ``plan_cache_mode=force_custom_plan``: FerretDB sends the field name as a
#: parameter, and only a custom plan sees it is ``'_id'``.)
#: ``fastupdate = off``: with PostgreSQL's default, new entries wait in a pending list that every
#: lookup reads from end to end until vacuum merges it. After a burst of inserts a find by
#: ``_id`` cost 0.59 ms of PostgreSQL CPU instead of 0.21 (8 threads, same minute), and each
#: email read, claim and outcome write of the worker is such a lookup. Inserting into the tree
#: directly cost no more in the same probe.
_GIN_TRIGGER_SQL = """
-- The fields a FerretDB table's pushed-down filters name, by its collection (FerretDB names a
-- table <collection>_<8 hex digits>): every table has _id; an email is found by the ListEmails
-- filters and by the ids a provider event names (core.store.events), a provider event by its
-- email or those ids, an email turn by its lease buckets, a webhook delivery by its state,
-- subscription and email, a suppression by its reason. A collection of no one's (a test's)
-- gets the emails' ListEmails fields.
CREATE OR REPLACE FUNCTION mailroom_gin_fields(table_name text) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $f$
    SELECT CASE regexp_replace(table_name, '_[0-9a-f]{8}$', '')
        WHEN 'email_turns' THEN ARRAY['_id', 'list_buckets']
        WHEN 'idempotency_keys' THEN ARRAY['_id']
        WHEN 'dead_letters' THEN ARRAY['_id']
        WHEN 'webhook_subscriptions' THEN ARRAY['_id']
        WHEN 'webhook_deliveries' THEN ARRAY['_id', 'state', 'subscription_id', 'email_id']
        WHEN 'suppressions' THEN ARRAY['_id', 'reason']
        WHEN 'emails' THEN ARRAY[
            '_id', 'status', 'recipients', 'tags', 'metadata_pairs', 'provider',
            'idempotency_key', 'list_buckets', 'message_id', 'provider_message_id'
        ]
        WHEN 'provider_events' THEN ARRAY[
            '_id', 'email_id', 'provider', 'provider_message_id', 'message_id'
        ]
        ELSE ARRAY[
            '_id', 'status', 'recipients', 'tags', 'metadata_pairs', 'provider',
            'idempotency_key', 'list_buckets'
        ]
    END
$f$;
CREATE OR REPLACE FUNCTION mailroom_gin_index_name(table_name text, field text) RETURNS text
LANGUAGE sql IMMUTABLE AS $f$
    SELECT left(table_name, 40) || '_' || trim(both '_' from field) || '_gin'
$f$;
CREATE OR REPLACE FUNCTION mailroom_index_ferretdb_table() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
    created record;
    field text;
BEGIN
    FOR created IN
        SELECT c.oid, c.relname, n.nspname
        FROM pg_event_trigger_ddl_commands() AS d
        JOIN pg_class AS c ON c.oid = d.objid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE d.command_tag = 'CREATE TABLE' AND c.relkind = 'r'
    LOOP
        IF EXISTS (
            SELECT 1 FROM pg_attribute WHERE attrelid = created.oid AND attname = '_jsonb'
        ) THEN
            FOREACH field IN ARRAY mailroom_gin_fields(created.relname) LOOP
                EXECUTE format(
                    'CREATE INDEX IF NOT EXISTS %I ON %I.%I '
                    'USING gin ((_jsonb->%L) jsonb_path_ops) WITH (fastupdate = off)',
                    mailroom_gin_index_name(created.relname, field),
                    created.nspname, created.relname, field
                );
            END LOOP;
        END IF;
    END LOOP;
END
$$;
-- Tables made before the trigger existed, or by an older checkout (a make dev cluster).
DO $$
DECLARE
    existing record;
    field text;
    index_name text;
    unwanted record;
BEGIN
    FOR existing IN
        SELECT c.relname, n.nspname FROM pg_attribute AS a
        JOIN pg_class AS c ON c.oid = a.attrelid AND c.relkind = 'r'
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE a.attname = '_jsonb' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    LOOP
        FOREACH field IN ARRAY mailroom_gin_fields(existing.relname) LOOP
            index_name := mailroom_gin_index_name(existing.relname, field);
            EXECUTE format(
                'CREATE INDEX IF NOT EXISTS %I ON %I.%I '
                'USING gin ((_jsonb->%L) jsonb_path_ops) WITH (fastupdate = off)',
                index_name, existing.nspname, existing.relname, field
            );
            -- An index of an older checkout: no pending list from now on, its own merged.
            EXECUTE format(
                'ALTER INDEX %I.%I SET (fastupdate = off)', existing.nspname, index_name
            );
            PERFORM gin_clean_pending_list(
                format('%I.%I', existing.nspname, index_name)::regclass
            );
        END LOOP;
        -- An older checkout gave every table every field's index: each costs every write.
        FOR unwanted IN
            SELECT i.indexname FROM pg_indexes AS i
            WHERE i.schemaname = existing.nspname AND i.tablename = existing.relname
                AND i.indexname LIKE '%\\_gin'
                AND i.indexname <> ALL (ARRAY(
                    SELECT mailroom_gin_index_name(existing.relname, f)
                    FROM unnest(mailroom_gin_fields(existing.relname)) AS f
                ))
        LOOP
            EXECUTE format('DROP INDEX %I.%I', existing.nspname, unwanted.indexname);
        END LOOP;
    END LOOP;
END
$$;
DROP EVENT TRIGGER IF EXISTS mailroom_ferretdb_gin;
CREATE EVENT TRIGGER mailroom_ferretdb_gin ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
    EXECUTE FUNCTION mailroom_index_ferretdb_table();
"""


def create_postgres_database(server: ManagedProcess, name: str) -> str:
    """Create database ``name`` (if missing) for FerretDB on a cluster from :func:`start_postgres`.

    Installs the event trigger that gives each of FerretDB's tables GIN indexes its ``_id`` and
    ``status`` filters can use (see ``_GIN_TRIGGER_SQL``).

    Returns:
        Its URL, ``postgres://postgres@host:port/<name>``.
    """
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a plain database name: {name!r}")
    parts = urllib.parse.urlsplit(server.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    if not _psql(host, port, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
        _psql(host, port, f'CREATE DATABASE "{name}"')
    _psql(host, port, _GIN_TRIGGER_SQL, database=name)
    return f"postgres://{POSTGRES_ROLE}@{host}:{port}/{name}"


def analyze(server: ManagedProcess) -> None:
    """``ANALYZE`` every table of FerretDB's database on a cluster from :func:`start_postgres`.

    What autovacuum does on its own a minute or more after a bulk load. Until then PostgreSQL has
    no statistics and plans a bucket query of ListEmails by ANDing the filter's GIN index with the
    bucket's, reading every match of the filter (22 ms a query for ``metadata`` over 100,000
    emails, against 3 ms once analyzed): benchmarks that measure right after seeding call this.
    """
    parts = urllib.parse.urlsplit(server.url)
    database = parts.path.lstrip("/") or FERRETDB_DATABASE
    _psql(parts.hostname or "127.0.0.1", parts.port or 5432, "ANALYZE", database=database)


def start_postgres(
    port: int,
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    log_path: Path | None = None,
    echo: TextIO | None = None,
    ready_timeout: float = 60.0,
) -> ManagedProcess:
    """Start a PostgreSQL cluster in ``data_dir`` on ``host:port``, creating it if needed.

    A new cluster is made by ``initdb`` with trust authentication for the ``postgres`` role,
    UTF-8 and the C locale; the server listens on ``host`` only (no Unix socket) with PostgreSQL's
    defaults otherwise (fsync on). The ``ferretdb`` database is created if missing.
    :meth:`ManagedProcess.stop` sends SIGINT, PostgreSQL's fast shutdown (SIGTERM would wait
    for clients to disconnect).

    PostgreSQL refuses to run as root: as root, ``initdb`` and ``postgres`` run as the
    ``postgres`` system user, ``data_dir`` is given to it, and every parent of ``data_dir``
    must be traversable by it.

    Args:
        port: The TCP port.
        data_dir: The cluster's directory (``PGDATA``); it must not exist, be empty or hold a
            cluster.
        host: The address to listen on.
        log_path: Receives the output of initdb and the server; by default
            ``<data_dir>.log`` beside ``data_dir`` (initdb wants the directory empty).
        echo: Also copy output lines to this stream.
        ready_timeout: Seconds to wait for the server to accept connections.

    Returns:
        The ready process; ``.url`` is ``postgres://postgres@host:port/ferretdb``.

    Raises:
        ServiceError: PostgreSQL is missing, cannot run as an unprivileged user, or did not
            start.
    """
    data_dir = Path(data_dir).resolve()
    log_path = Path(log_path) if log_path else data_dir.with_name(data_dir.name + ".log")
    postgres, initdb = _postgres_tool("postgres"), _postgres_tool("initdb")
    run_as = _postgres_run_as()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if run_as is not None:
        _hand_over_to(data_dir, run_as)
    user = run_as.pw_name if run_as is not None else None

    if not (data_dir / "PG_VERSION").is_file():
        argv = [
            initdb,
            "-D", str(data_dir),
            "-A", "trust",
            "-U", POSTGRES_ROLE,
            "-E", "UTF8",
            "--no-locale",
            "--no-instructions",
        ]  # fmt: skip
        # cwd: initdb needs to read its working directory, and root's may be closed to it.
        _run_logged(argv, log_path, "initdb", cwd=data_dir, user=user)

    argv = [
        postgres,
        "-D", str(data_dir),
        "-p", str(port),
        "-h", host,
        # No Unix socket: nothing uses it, and its path length is limited to 107 bytes.
        "-k", "",
        # FerretDB's pushed-down filters name the field as a parameter: only a custom plan can
        # use the GIN indexes on it (see _GIN_TRIGGER_SQL).
        "-c", "plan_cache_mode=force_custom_plan",
    ]  # fmt: skip
    process = ManagedProcess(
        "postgres",
        argv,
        log_path=log_path,
        ready=functools.partial(_pg_isready, host, port),
        ready_timeout=ready_timeout,
        url=f"postgres://{POSTGRES_ROLE}@{host}:{port}/{FERRETDB_DATABASE}",
        cwd=data_dir,
        echo=echo,
        user=user,
        stop_signal=signal.SIGINT,
    ).start()
    try:
        create_postgres_database(process, FERRETDB_DATABASE)
    except BaseException:
        process.stop()
        raise
    return process
