"""The ingest agent against real sources: PostgreSQL tables of every mapped type, an HTTP API
served here (each kind of pagination, 429 with Retry-After, injected 500s, a malformed page),
and files (CSV, NDJSON, gzip, Parquet, a corrupt file). Each bronze table is read back with the
`deltalake` package and compared row for row with its source; then incremental runs after
inserts and updates, schema drift, an unreachable source, kill -9 trials for each connector,
`strata build` landing a model's sources before it, and the cluster: `strata ingest-agent`
processes on RabbitMQ, one of them killed -9 mid-way.

MySQL/MariaDB tables of every mapped type and an incremental table are checked the same way;
TLS to MySQL against a private TLS-only MariaDB started here (tls_mariadb.py).

Usage: check_ingest.py --strata target/debug/strata [--pg postgresql://postgres@127.0.0.1/test]
                       [--mysql mysql://root@127.0.0.1:3306/test]
                       [--amqp amqp://guest:guest@127.0.0.1:5672/%2f]
"""

import argparse
import gzip
import http.server
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import deltalake
import psycopg
import pymysql
import pyarrow as pa
import pyarrow.parquet as pq

from tls_mariadb import tls_only_mariadb
from tls_mariadb import connect as tls_connect

SCHEMA = "ingest_check"
TOKEN = "test-api-token-not-a-real-secret"


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


# ---------------------------------------------------------------------------------------------
# The API served to the agent.


class Api:
    """Datasets and failure switches of the test server."""

    def __init__(self):
        self.offset_records = [{"id": i, "name": f"item {i}", "price": i * 1.5} for i in range(30)]
        self.cursor_records = [{"id": i, "kind": "a" if i % 2 else "b"} for i in range(23)]
        self.link_records = [
            {"id": i, "owner": {"name": f"o{i}", "active": i % 3 == 0}, "tags": [f"t{i}", "x"]}
            for i in range(10)
        ]
        self.page_records = [{"id": i, "score": i * 10} for i in range(15)]
        self.flaky_records = [{"id": i, "note": f"n{i}"} for i in range(12)]
        self.flaky_records[4] = 42  # not an object: quarantined
        self.stream_records = [{"id": i, "payload": "x" * 50} for i in range(1000)]
        self.malformed_page = True
        self.failures = {}  # path+page -> remaining failures
        self.rate_limited_once = set()
        self.requests = []
        self.lock = threading.Lock()

    def page(self, records, start, size):
        return records[start:start + size]


def make_handler(api):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, status, body, headers=()):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            with api.lock:
                api.requests.append((time.monotonic(), self.path))
            base = f"http://127.0.0.1:{self.server.server_port}"
            if url.path == "/offset":
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self.reply(401, {"error": "no token"})
                offset, limit = int(query["offset"]), int(query["limit"])
                return self.reply(200, {"data": api.page(api.offset_records, offset, limit)})
            if url.path == "/cursor":
                start = int(query.get("after", "0"))
                items = api.page(api.cursor_records, start, 5)
                following = start + 5 if start + 5 < len(api.cursor_records) else None
                return self.reply(200, {"items": items, "next": str(following) if following else None})
            if url.path == "/link":
                page = int(query.get("page", "0"))
                items = api.page(api.link_records, page * 4, 4)
                headers = []
                if (page + 1) * 4 < len(api.link_records):
                    headers.append(("Link", f'<{base}/link?page={page + 1}>; rel="next"'))
                return self.reply(200, items, headers)
            if url.path == "/page":
                page = int(query["page"])
                return self.reply(200, {"results": api.page(api.page_records, (page - 1) * 6, 6)})
            if url.path == "/flaky":
                page = int(query["page"])
                key = f"flaky{page}"
                if page == 1 and key not in api.rate_limited_once:
                    api.rate_limited_once.add(key)
                    return self.reply(429, {"error": "slow down"}, [("Retry-After", "1")])
                if page == 2:
                    left = api.failures.setdefault(key, 2)
                    if left > 0:
                        api.failures[key] = left - 1
                        return self.reply(500, {"error": "injected"})
                if page == 3 and api.malformed_page:
                    return self.reply(200, b'{"results": [ {"id": 99, ')
                return self.reply(200, {"results": api.page(api.flaky_records, (page - 1) * 4, 4)})
            if url.path == "/stream":
                page = int(query["page"])
                time.sleep(0.01)
                return self.reply(200, {"results": api.page(api.stream_records, (page - 1) * 25, 25)})
            return self.reply(404, {"error": "no such endpoint"})

    return Handler


def start_api(api):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(api))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# ---------------------------------------------------------------------------------------------
# PostgreSQL sources.

EVERY_TYPE = """
CREATE TABLE {schema}.every_type (
    id integer PRIMARY KEY, small smallint, big bigint, real_value real, double_value double precision,
    money_value numeric(12, 2), free_numeric numeric, flag boolean, label text, short_label varchar(10),
    code char(3), day date, moment timestamp, moment_tz timestamptz, doc json, docb jsonb,
    numbers integer[], words text[], token uuid, raw bytea, span interval, clock time
)"""

EVERY_TYPE_ROWS = [
    (1, 7, 70000000000, 1.5, 2.25, Decimal("1234.50"), Decimal("3.14159265358979323846"), True,
     "plain", "short", "abc", date(2024, 2, 29), datetime(2024, 1, 2, 3, 4, 5, 123456),
     datetime(2024, 1, 2, 3, 4, 5, 654321, tzinfo=timezone.utc), '{"a": 1}', '{"b": [1, 2]}',
     [1, 2, 3], ["x", "y,z"], uuid.UUID("12345678-1234-5678-1234-567812345678"), b"\x00\xffab",
     "1 day 02:03:04", "12:34:56"),
    (2,) + (None,) * 21,
    (3, -32768, -9223372036854775808, -3.4e38, float("nan"), Decimal("-9999999999.99"),
     Decimal("-0.000001"), False, "", "", "", date(1, 1, 1), datetime(1900, 1, 1),
     datetime(1970, 1, 1, tzinfo=timezone.utc), "[]", "null", [], [], None, b"", "-1 year", "00:00:00"),
    (4, 32767, 9223372036854775807, 3.4e38, float("inf"), Decimal("9999999999.99"), Decimal("1e20"),
     None, 'quote " comma , newline \n tab \t back \\ slash', "ünï😀", "ç", date(9999, 12, 31),
     datetime(2200, 12, 31, 23, 59, 59, 999999), datetime(2262, 4, 11, tzinfo=timezone.utc),
     '{"nested": {"deep": [true, null]}}', "{}", [None, 5], [None, "null"], None, None, None, None),
]


def setup_postgres(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        db.execute(f"CREATE SCHEMA {SCHEMA}")
        db.execute(EVERY_TYPE.format(schema=SCHEMA))
        with db.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {SCHEMA}.every_type VALUES ({', '.join(['%s'] * 22)})", EVERY_TYPE_ROWS
            )
        db.execute(
            f"CREATE TABLE {SCHEMA}.customers (id bigint PRIMARY KEY, name text, country text, "
            "updated_at timestamptz NOT NULL)"
        )
        db.execute(
            f"INSERT INTO {SCHEMA}.customers SELECT i, 'customer ' || i, "
            "(ARRAY['DE','FR','US'])[1 + i % 3], timestamptz '2026-01-01 00:00:00+00' + i * interval '1 minute' "
            "FROM generate_series(1, 200) AS i"
        )
        db.execute(f"CREATE TABLE {SCHEMA}.strict (id int, value text)")
        db.execute(f"INSERT INTO {SCHEMA}.strict VALUES (1, 'a'), (2, 'b')")
        db.execute(f"CREATE TABLE {SCHEMA}.big (id bigint PRIMARY KEY, payload text)")
        db.execute(
            f"INSERT INTO {SCHEMA}.big SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, 60000) AS i"
        )


MYSQL_EVERY_TYPE = """
CREATE TABLE ingest_check_every_type (
    id int PRIMARY KEY, tiny tinyint, small smallint, big bigint, ubig bigint unsigned,
    real_value float, double_value double, money_value decimal(12, 2), wide decimal(50, 10),
    label varchar(100), code char(3), body text, day date, moment datetime(6), stamp timestamp(6) NULL,
    clock time, doc json, kind enum('a', 'b'), raw varbinary(10), flags bit(8), year_value year
) CHARACTER SET utf8mb4"""

MYSQL_EVERY_TYPE_ROWS = [
    (1, 7, 300, 70000000000, 18446744073709551615, 1.5, 2.25, Decimal("1234.50"),
     Decimal("12345678901234567890123456789012345678.0123456789"), "plain", "abc", "long text",
     date(2024, 2, 29), datetime(2024, 1, 2, 3, 4, 5, 123456), datetime(2024, 1, 2, 3, 4, 5, 654321),
     "12:34:56", '{"a": [1, 2]}', "a", b"\x00\xffab", 5, 2024),
    (2,) + (None,) * 20,
    (3, -128, -32768, -9223372036854775808, 0, -3.0e38, -1.7e308, Decimal("-9999999999.99"),
     Decimal("-0.0000000001"), "", "", "quote ' \" comma , newline \n tab \t back \\ slash ünï😀",
     date(1000, 1, 1), datetime(1000, 1, 1, 0, 0, 0), datetime(1970, 1, 2, 0, 0, 0),
     "-838:59:59", "[]", "b", b"", 255, 1901),
]


def mysql_connect(url):
    parsed = urlparse(url)
    return pymysql.connect(host=parsed.hostname, port=parsed.port or 3306, user=parsed.username or "root",
                           password=parsed.password or "", database=parsed.path.lstrip("/"),
                           autocommit=True, charset="utf8mb4")


def setup_mysql(url):
    with mysql_connect(url) as db, db.cursor() as cursor:
        for table in ["ingest_check_every_type", "ingest_check_orders"]:
            cursor.execute(f"DROP TABLE IF EXISTS {table}")
        cursor.execute("SET time_zone = '+00:00'")
        cursor.execute(MYSQL_EVERY_TYPE)
        cursor.executemany(
            f"INSERT INTO ingest_check_every_type VALUES ({', '.join(['%s'] * 21)})", MYSQL_EVERY_TYPE_ROWS
        )
        cursor.execute(
            "CREATE TABLE ingest_check_orders (id bigint PRIMARY KEY, amount decimal(10, 2), "
            "updated_at datetime(6) NOT NULL, KEY (updated_at))"
        )
        cursor.execute("SET SESSION max_recursive_iterations = 100000")
        cursor.execute(
            "INSERT INTO ingest_check_orders WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
            "WHERE i < 30000) SELECT i, i / 100, TIMESTAMP '2026-01-01 00:00:00' + INTERVAL i SECOND FROM n"
        )


def check_mysql_every_type(strata, url):
    landed = {row["id"]: row for row in bronze(strata, "shop", "every_type")}
    check(len(landed) == len(MYSQL_EVERY_TYPE_ROWS), f"mysql every_type: {len(landed)} rows landed")
    with mysql_connect(url) as db, db.cursor() as cursor:
        cursor.execute("SET time_zone = '+00:00'")
        cursor.execute(
            "SELECT id, tiny, small, big, ubig, real_value, double_value, money_value, wide, label, code, body, "
            "day, moment, stamp, CAST(clock AS CHAR), CAST(doc AS CHAR), kind, HEX(raw), flags + 0, year_value "
            "FROM ingest_check_every_type"
        )
        names = ["id", "tiny", "small", "big", "ubig", "real_value", "double_value", "money_value", "wide",
                 "label", "code", "body", "day", "moment", "stamp", "clock", "doc", "kind", "raw", "flags",
                 "year_value"]
        for source in cursor.fetchall():
            row = landed[source[0]]
            for name, expected in zip(names, source):
                value = row[name]
                if name == "stamp" and value is not None:
                    value = value.astimezone(timezone.utc).replace(tzinfo=None)
                if name in ("real_value", "double_value"):
                    ok = same_float(value, expected) or (value is not None and abs(value - expected) <= 1e-6 * abs(expected))
                elif name == "wide":
                    ok = (value is None and expected is None) or (value is not None and Decimal(value) == expected)
                else:
                    ok = value == expected
                check(ok, f"mysql every_type id={source[0]} {name}: {value!r} != {expected!r}")
    print(f"ok: every mapped MySQL/MariaDB type, NULLs and edge values ({len(landed)} rows)")


def check_mysql_orders(strata, expected):
    ids = [row["id"] for row in bronze(strata, "shop", "orders")]
    check(len(ids) == expected and len(set(ids)) == expected, f"mysql orders: {len(ids)} rows, {len(set(ids))} distinct")


# ---------------------------------------------------------------------------------------------
# The project.

SOURCES = """
version: 2
sources:
  - name: crm
    ingest:
      connector: postgres
      connection: {{env: INGEST_PG_URL}}
    tables:
      - name: customers
        ingest: {{table: {schema}.customers, cursor: updated_at, split_by: id, parallelism: 3, chunk_rows: 64}}
      - name: every_type
        ingest: {{table: {schema}.every_type}}
      - name: big
        ingest: {{table: {schema}.big, cursor: id, split_by: id, parallelism: 2, chunk_rows: 4000}}
      - name: strict
        ingest: {{table: {schema}.strict, schema_drift: fail}}
      - name: cluster_big
        ingest: {{table: {schema}.big, cursor: id, split_by: id, parallelism: 2, chunk_rows: 1000}}
  - name: api
    ingest: {{connector: http, retries: 4}}
    tables:
      - name: by_offset
        ingest:
          url: "{base}/offset"
          records: data
          pagination: {{kind: offset, limit: 7}}
          bearer_token: {{env: INGEST_API_TOKEN}}
      - name: by_cursor
        ingest: {{url: "{base}/cursor", records: items, pagination: {{kind: cursor, cursor_path: next, param: after}}}}
      - name: by_link
        ingest: {{url: "{base}/link", pagination: {{kind: link}}, nested: json}}
      - name: by_page
        ingest: {{url: "{base}/page", records: results, pagination: {{kind: page}}, requests_per_second: 20}}
      - name: flaky
        ingest: {{url: "{base}/flaky", records: results, pagination: {{kind: page}}, pages_per_commit: 2}}
      - name: stream
        ingest: {{url: "{base}/stream", records: results, pagination: {{kind: page}}, pages_per_commit: 1}}
  - name: shop
    ingest:
      connector: mysql
      connection: {{env: INGEST_MYSQL_URL}}
    tables:
      - name: every_type
        ingest: {{table: ingest_check_every_type}}
      - name: orders
        ingest: {{table: ingest_check_orders, cursor: updated_at, split_by: id, parallelism: 2, chunk_rows: 2500}}
  - name: secure
    ingest: {{connector: postgres, table: {schema}.customers}}
    tables:
      - name: customers
        ingest: {{connection: {{env: INGEST_PG_TLS_URL}}}}
      - name: wrong_host
        ingest: {{connection: {{env: INGEST_PG_TLS_WRONG_HOST_URL}}, retries: 0}}
  - name: down
    tables:
      - name: api
        ingest: {{connector: http, url: "http://127.0.0.1:9/nothing", retries: 1, timeout_secs: 2}}
  - name: landing
    ingest: {{connector: files}}
    tables:
      - name: events
        ingest: {{path: "incoming/events-*"}}
      - name: users
        ingest: {{path: "incoming/users-*.csv"}}
      - name: metrics
        ingest: {{path: "incoming/metrics-*.parquet"}}
      - name: drops
        ingest: {{path: "drops/*.ndjson", files_per_commit: 1}}
"""


def write_project(project, base):
    (project / "models" / "silver").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(
        "name: ingest_check\nversion: '1.0.0'\nconfig-version: 2\nmodel-paths: [models]\n"
    )
    (project / "models" / "sources.yml").write_text(SOURCES.format(schema=SCHEMA, base=base))
    (project / "models" / "silver" / "customers_by_country.sql").write_text(
        "select country, count(*) as customers\n"
        "from {{ source('crm', 'customers') }}\ngroup by country\n"
    )
    incoming = project / "incoming"
    incoming.mkdir()
    (incoming / "events-1.ndjson").write_text(
        '{"id": 1, "type": "click", "at": "2026-01-01T00:00:00"}\n'
        '{"id": 2, "type": "view", "at": "2026-01-01T00:01:00"}\n'
        '{"id": 3, "type": broken\n'
        "\n"
        '{"id": 4, "type": "click", "at": null}\n'
    )
    with gzip.open(incoming / "events-2.ndjson.gz", "wt") as out:
        out.write('{"id": 5, "type": "buy", "at": "2026-01-02T00:00:00", "channel": "mobile"}\n')
        out.write('{"id": 6, "type": "view", "at": "2026-01-02T00:00:01"}\n')
    # A gzip stream cut short: the lines before the cut land, the rest of the file is
    # quarantined from the line where reading failed; and a .gz file that is not gzip at all.
    truncated = gzip.compress("".join(
        json.dumps({"id": 1000 + row, "type": "view", "at": "2026-01-03T00:00:00"}) + "\n"
        for row in range(5000)
    ).encode())
    (incoming / "events-3.ndjson.gz").write_bytes(truncated[: len(truncated) * 3 // 5])
    (incoming / "events-4.ndjson.gz").write_bytes(b"this is not gzip\n")
    (incoming / "users-1.csv").write_text(
        'id,name,email\n1,Ann,ann@example.com\n2,"Bob, Jr.",\n3,Cy,cy@example.com,extra\n4,"Di ""D""",di@x\n'
    )
    pq.write_table(
        pa.table({"metric": [f"m{i}" for i in range(100)], "value": [i / 4 for i in range(100)]}),
        incoming / "metrics-1.parquet",
    )
    (incoming / "metrics-2.parquet").write_bytes(b"PAR1 this is not parquet")
    drops = project / "drops"
    drops.mkdir()
    for index in range(40):
        lines = [json.dumps({"file": index, "row": row}) for row in range(50)]
        (drops / f"drop-{index:03}.ndjson").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------
# Running and reading.


class Strata:
    def __init__(self, binary, project, env):
        self.binary, self.project, self.env = binary, project, env

    def command(self, *args):
        return [self.binary, *args, "--project-dir", str(self.project), "--warehouse", str(self.warehouse)]

    @property
    def warehouse(self):
        return self.project / "warehouse"

    def run(self, *args, expect_ok=True):
        result = subprocess.run(self.command(*args), env=self.env, capture_output=True, text=True, timeout=600)
        if expect_ok and result.returncode != 0:
            fail(f"strata {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def start(self, *args):
        return subprocess.Popen(self.command(*args), env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def bronze(strata, source, table):
    path = strata.warehouse / source / table
    if not (path / "_delta_log").exists():
        return []
    return deltalake.DeltaTable(str(path)).to_pyarrow_table().to_pylist()


def data_rows(rows):
    return [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]


def same_float(a, b):
    if a is None or b is None:
        return a is b
    if a != a or b != b:
        return a != a and b != b
    return a == b or abs(a - b) <= 1e-6 * max(abs(a), abs(b))


def check_every_type(strata, pg_url):
    landed = {row["id"]: row for row in bronze(strata, "crm", "every_type")}
    check(len(landed) == len(EVERY_TYPE_ROWS), f"every_type: {len(landed)} rows landed")
    with psycopg.connect(pg_url) as db:
        texts = {
            row[0]: row[1:]
            for row in db.execute(
                f"SELECT id, free_numeric::text, doc::text, docb::text, array_to_json(numbers)::text, "
                f"array_to_json(words)::text, token::text, encode(raw, 'hex'), span::text, clock::text, "
                f"label, short_label, code FROM {SCHEMA}.every_type"
            )
        }
        typed = {
            row[0]: row
            for row in db.execute(
                f"SELECT id, small, big, real_value, double_value, money_value, flag, day, moment, "
                f"moment_tz FROM {SCHEMA}.every_type"
            )
        }
    text_columns = ["free_numeric", "doc", "docb", "numbers", "words", "token", "raw", "span", "clock",
                    "label", "short_label", "code"]
    for key, row in landed.items():
        for column, expected in zip(text_columns, texts[key]):
            check(row[column] == expected, f"every_type id={key} {column}: {row[column]!r} != {expected!r}")
        _, small, big, real_value, double_value, money, flag, day, moment, moment_tz = typed[key]
        check(row["small"] == small and row["big"] == big, f"every_type id={key} integers")
        check(same_float(row["real_value"], real_value), f"id={key} real {row['real_value']} != {real_value}")
        check(same_float(row["double_value"], double_value), f"id={key} double {row['double_value']}")
        check(row["money_value"] == money, f"id={key} numeric(12,2) {row['money_value']!r} != {money!r}")
        check(row["flag"] == flag and row["day"] == day, f"id={key} flag/day {row['flag']} {row['day']}")
        check(row["moment"] == moment, f"id={key} timestamp {row['moment']!r} != {moment!r}")
        landed_tz = row["moment_tz"]
        check(
            (landed_tz is None and moment_tz is None)
            or (landed_tz is not None and landed_tz.astimezone(timezone.utc) == moment_tz.astimezone(timezone.utc)),
            f"id={key} timestamptz {landed_tz!r} != {moment_tz!r}",
        )
    print(f"ok: every mapped PostgreSQL type, NULLs and edge values ({len(landed)} rows)")


def source_rows(pg_url, sql):
    with psycopg.connect(pg_url) as db:
        return list(db.execute(sql))


def tls_urls(pg_url):
    """Connection URLs that verify the server's certificate against its own file (the server's
    certificate is self-signed for `localhost`): one naming `localhost`, one naming 127.0.0.1."""
    with psycopg.connect(pg_url, autocommit=True) as db:
        ssl, cert_file = db.execute("SELECT current_setting('ssl'), current_setting('ssl_cert_file')").fetchone()
    if ssl != "on" or not os.access(cert_file, os.R_OK):
        fail(f"PostgreSQL must serve TLS with a readable certificate for the TLS checks (ssl={ssl}, "
             f"ssl_cert_file={cert_file}); Debian's server does with its snakeoil certificate")
    parsed = urlparse(pg_url)
    user = parsed.username or "postgres"
    database = parsed.path.lstrip("/") or "postgres"
    port = parsed.port or 5432
    query = f"sslmode=verify-full&sslrootcert={cert_file}"
    return (f"postgresql://{user}@localhost:{port}/{database}?{query}",
            f"postgresql://{user}@127.0.0.1:{port}/{database}?{query}")


def check_tls(strata, output):
    """A source read over TLS with `sslmode=verify-full` lands like the plain one; the same
    certificate presented for another host name fails the source, naming the certificate."""
    rows = bronze(strata, "secure", "customers")
    check(len(rows) == 200, f"secure.customers over TLS: {len(rows)} rows")
    check("secure.wrong_host" in output and "certificate" in output.lower(),
          f"a certificate for another host must fail the source, naming the certificate:\n{output}")
    print("ok: PostgreSQL over TLS (verify-full against the server's certificate); a wrong host name fails")


MYSQL_TLS_SOURCES = """
version: 2
sources:
  - name: vault
    ingest: {connector: mysql, table: accounts}
    tables:
      - name: verified
        ingest: {connection: {env: TLS_VERIFIED_URL}}
      - name: preferred
        ingest: {connection: {env: TLS_PREFERRED_URL}}
      - name: wrong_host
        ingest: {connection: {env: TLS_WRONG_HOST_URL}, retries: 0}
      - name: clear_server
        ingest: {connection: {env: TLS_CLEAR_SERVER_URL}, retries: 0}
"""


def check_mysql_tls(binary, work, machine_mysql_url):
    """The MySQL connector over TLS, against a server that refuses connections in clear:
    ssl-mode=VERIFY_IDENTITY with the test authority lands the table; the default (PREFERRED)
    negotiates TLS; the same certificate for another host name fails, naming the certificate;
    ssl-mode=REQUIRED against the machine's server, which offers no TLS, fails saying so."""
    with tls_only_mariadb() as (port, ca):
        with tls_connect(port, ca) as db, db.cursor() as cursor:
            cursor.execute("CREATE DATABASE tls_check")
            cursor.execute("CREATE TABLE tls_check.accounts (id int PRIMARY KEY, name varchar(40), balance decimal(10,2))")
            cursor.executemany("INSERT INTO tls_check.accounts VALUES (%s, %s, %s)",
                               [(i, f"account {i}", Decimal(i) / 4) for i in range(1, 301)])
        project = work / "tls-project"
        (project / "models").mkdir(parents=True)
        (project / "dbt_project.yml").write_text(
            "name: tls_check\nversion: '1.0.0'\nconfig-version: 2\nmodel-paths: [models]\n")
        (project / "models" / "sources.yml").write_text(MYSQL_TLS_SOURCES)
        verify = f"ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}&prefer_socket=false"
        separator = "&" if "?" in machine_mysql_url else "?"
        env = dict(os.environ, STRATA_LOG="warn",
                   TLS_VERIFIED_URL=f"mysql://root@localhost:{port}/tls_check?{verify}",
                   TLS_PREFERRED_URL=f"mysql://root@127.0.0.1:{port}/tls_check?prefer_socket=false",
                   TLS_WRONG_HOST_URL=f"mysql://root@127.0.0.1:{port}/tls_check?{verify}",
                   TLS_CLEAR_SERVER_URL=f"{machine_mysql_url}{separator}ssl-mode=REQUIRED")
        strata = Strata(binary, project, env)
        result = strata.run("ingest", expect_ok=False)
        output = result.stdout + result.stderr
        check(result.returncode != 0, f"the wrong host and the clear server must fail the run:\n{output}")
        for table in ("verified", "preferred"):
            rows = sorted(data_rows(bronze(strata, "vault", table)), key=lambda row: row["id"])
            expected = [{"id": i, "name": f"account {i}", "balance": Decimal(i) / 4} for i in range(1, 301)]
            check(rows == expected, f"vault.{table} over TLS: {len(rows)} rows, first {rows[:2]}\n{output}")
        check("vault.wrong_host" in output and "certificate" in output.lower(),
              f"a certificate for another host must fail the source, naming the certificate:\n{output}")
        check("vault.clear_server" in output and "offers no TLS" in output,
              f"ssl-mode=REQUIRED against a server without TLS must say so:\n{output}")
    print("ok: MySQL over TLS (VERIFY_IDENTITY against the test authority, PREFERRED negotiated) to a "
          "TLS-only MariaDB; a wrong host name and a server without TLS fail clearly")


def check_customers(strata, pg_url, expected_count):
    rows = bronze(strata, "crm", "customers")
    check(len(rows) == expected_count, f"customers: {len(rows)} rows, expected {expected_count}")
    versions = {(row["id"], row["updated_at"]) for row in rows}
    check(len(versions) == len(rows), "customers: a row version landed twice")
    current = source_rows(pg_url, f"SELECT id, name, country, updated_at FROM {SCHEMA}.customers")
    landed = {(row["id"], row["updated_at"]): row for row in rows}
    for id_, name, country, updated_at in current:
        row = landed.get((id_, updated_at))
        check(row is not None, f"customers: id {id_} at {updated_at} did not land")
        check(row["name"] == name and row["country"] == country, f"customers: id {id_} differs")
    batches = {row["_batch_id"] for row in rows}
    check(min(batches) == 1, f"customers: batches {sorted(batches)}")
    check(all(row["_source_system"] == "postgres:crm.customers" for row in rows), "source system column")


def check_api(strata, api):
    offset = data_rows(bronze(strata, "api", "by_offset"))
    check(sorted(offset, key=lambda r: r["id"]) == api.offset_records, f"by_offset: {offset[:3]}…")
    cursor = data_rows(bronze(strata, "api", "by_cursor"))
    check(sorted(cursor, key=lambda r: r["id"]) == api.cursor_records, "by_cursor differs")
    link = sorted(data_rows(bronze(strata, "api", "by_link")), key=lambda r: r["id"])
    check(len(link) == len(api.link_records), f"by_link: {len(link)} rows")
    for landed, record in zip(link, api.link_records):
        check(json.loads(landed["owner"]) == record["owner"], f"by_link owner {landed}")
        check(json.loads(landed["tags"]) == record["tags"], f"by_link tags {landed}")
    page = data_rows(bronze(strata, "api", "by_page"))
    check(sorted(page, key=lambda r: r["id"]) == api.page_records, "by_page differs")
    print("ok: offset, cursor, Link-header and page-number pagination equal the API's records")


def check_flaky(strata, api, malformed_fixed):
    landed = sorted(row["id"] for row in bronze(strata, "api", "flaky"))
    objects = [r["id"] for r in api.flaky_records if isinstance(r, dict)]
    expected = objects if malformed_fixed else [i for i in objects if i < 8]
    check(landed == expected, f"flaky: landed {landed}, expected {expected}")
    quarantine = bronze(strata, "api", "flaky__quarantine")
    reasons = " | ".join(row["reason"] for row in quarantine)
    check("not a JSON object" in reasons, f"flaky: the non-object record is not quarantined: {reasons}")
    check("not JSON" in reasons, f"flaky: the malformed page is not quarantined: {reasons}")
    check(any("page=3" in row["position"] for row in quarantine), "flaky: quarantine position names page 3")


def check_files(strata, second_round):
    landed = sorted(data_rows(bronze(strata, "landing", "events")), key=lambda r: r["id"])
    events = [row for row in landed if row["id"] < 1000]
    ids = [row["id"] for row in events]
    expected = [1, 2, 4, 5, 6] + ([7] if second_round else [])
    check(ids == expected, f"events: {ids}, expected {expected}")
    check(events[3]["channel"] == "mobile" and events[0]["channel"] is None, "events: drift column channel")
    quarantine = bronze(strata, "landing", "events__quarantine")
    check(any(row["position"].endswith("events-1.ndjson:3") for row in quarantine),
          f"events: the broken line is not quarantined at events-1.ndjson:3: {quarantine}")
    cut_short = [row["id"] for row in landed if row["id"] >= 1000]
    check(0 < len(cut_short) < 5000 and cut_short == list(range(1000, 1000 + len(cut_short))),
          f"events: the lines before the gzip stream's cut land once, in order: {len(cut_short)} rows")
    check(any("events-3.ndjson.gz:" in row["position"] and "cannot be read from this line on" in row["reason"]
              for row in quarantine), f"events: the cut gzip stream is not quarantined: {quarantine}")
    check(any(row["position"].endswith("events-4.ndjson.gz") and "not a readable gzip file" in row["reason"]
              for row in quarantine), f"events: the .gz file that is not gzip is not quarantined: {quarantine}")
    users = sorted(data_rows(bronze(strata, "landing", "users")), key=lambda r: r["id"])
    check([u["name"] for u in users] == ["Ann", "Bob, Jr.", 'Di "D"'], f"users: {users}")
    check(users[1]["email"] == "", f"users: empty field {users[1]}")
    users_quarantine = bronze(strata, "landing", "users__quarantine")
    check(any("4 fields where the header has 3" in row["reason"] for row in users_quarantine),
          f"users: the long row is not quarantined: {users_quarantine}")
    metrics = bronze(strata, "landing", "metrics")
    check(len(metrics) == 100 and sum(r["value"] for r in metrics) == sum(i / 4 for i in range(100)), "metrics")
    metrics_quarantine = bronze(strata, "landing", "metrics__quarantine")
    check(any("metrics-2.parquet" in row["position"] for row in metrics_quarantine), "corrupt parquet quarantined")
    print("ok: CSV, NDJSON, gzip and Parquet files land once; bad lines and files go to quarantine")


def kill_trials(strata, select, trials, seed, finished):
    """Starts `strata ingest --select select`, kills it -9 after a seeded random delay, `trials`
    times; then runs it to the end and calls `finished`."""
    rng = random.Random(seed)
    killed = 0
    for _ in range(trials):
        process = strata.start("ingest", "--select", select)
        time.sleep(rng.uniform(0.2, 1.5))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
        process.wait()
    strata.run("ingest", "--select", select)
    finished()
    print(f"ok: {select}: {killed} of {trials} runs killed -9 mid-way (seed {seed}), every row landed once")


def run_results(strata):
    """The nodes of the last run's record, by unique id."""
    record = json.loads((strata.project / "target" / "run_results.json").read_text())
    return {node["unique_id"]: node for node in record["nodes"]}


def check_cluster(strata, pg_url, amqp_url, seed):
    """The cluster: `strata ingest --cluster` plans one ingest task per source on the ingest
    queue and `strata ingest-agent` processes land them. The agent landing crm.cluster_big is
    killed -9 mid-way; a second agent takes the task over (the broker delivers it again) and is
    drained with SIGTERM mid-way in turn (it stops after its current chunk and exits); a third
    agent lands the rest, and the bronze table holds every row once. Then `strata build
    --cluster` lands the model's source through the agent and builds the model on a `strata
    worker`; SIGTERM drains both."""
    suffix = uuid.uuid4().hex[:8]
    env = dict(strata.env, STRATA__BROKER__URL=amqp_url, STRATA__CLUSTER__SECRET=f"ingest-check-{suffix}",
               STRATA__BROKER__TASK_QUEUE=f"strata.tasks.ingest-check-{suffix}",
               STRATA__BROKER__INGEST_QUEUE=f"strata.ingest.ingest-check-{suffix}")
    logs = strata.project / "cluster-logs"
    logs.mkdir(exist_ok=True)
    processes = []

    def start(name, *args):
        log = open(logs / f"{name}.log", "w")
        process = subprocess.Popen([strata.binary, *args], env=env, stdout=log, stderr=subprocess.STDOUT)
        processes.append((name, process))
        return process

    def log_of(name):
        return (logs / f"{name}.log").read_text()

    try:
        agent_a = start("agent-a", "ingest-agent", "--agent-id", "agent-a", "--slots", "1")
        landing = subprocess.Popen(
            strata.command("ingest", "--cluster", amqp_url, "--select", "source:crm.cluster_big",
                           "--task-timeout-secs", "20"),
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        delta_log = strata.warehouse / "crm" / "cluster_big" / "_delta_log"
        rng = random.Random(seed)

        def commits():
            return len(list(delta_log.glob("*.json"))) if delta_log.exists() else 0

        def wait_for_commits(wanted):
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and landing.poll() is None and commits() < wanted:
                time.sleep(0.05)
            return commits()

        killed_at = wait_for_commits(rng.randint(3, 12))
        agent_a.send_signal(signal.SIGKILL)
        agent_a.wait()
        agent_b = start("agent-b", "ingest-agent", "--agent-id", "agent-b", "--slots", "1")
        drained_at = wait_for_commits(killed_at + rng.randint(5, 15))
        agent_b.send_signal(signal.SIGTERM)
        agent_b.wait(timeout=60)
        check("drained" in log_of("agent-b"), f"agent-b did not drain:\n{log_of('agent-b')}")
        after_drain = commits()
        start("agent-c", "ingest-agent", "--agent-id", "agent-c", "--slots", "1")
        output, _ = landing.communicate(timeout=600)
        check(landing.returncode == 0, f"strata ingest --cluster failed:\n{output}\nagent-c:\n{log_of('agent-c')}")
        check("source crm.cluster_big" in output, f"no progress line for the source:\n{output}")
        ids = [row["id"] for row in bronze(strata, "crm", "cluster_big")]
        check(len(ids) == 60000 and len(set(ids)) == 60000,
              f"cluster_big after an agent was killed and one drained: {len(ids)} rows, {len(set(ids))} distinct")
        check(after_drain < commits(), f"agent-b drained at commit {after_drain}: nothing was left for agent-c")
        node = run_results(strata)["source.ingest_check.crm.cluster_big"]
        check(node["status"] == "success" and node["workers"] == ["agent-c"] and node["attempts"] >= 2,
              f"the source's record: {node}")
        # The drained attempt's rows count (it handed the task on, not failed it); only the
        # rows of agent-a, killed -9 before it could report, are not in the record.
        landed_before_c = deltalake.DeltaTable(str(delta_log.parent), version=after_drain - 1).to_pyarrow_table().num_rows
        check(node["rows"] > 60000 - landed_before_c,
              f"the record's rows ({node['rows']}) leave out agent-b's drained attempt "
              f"(agent-c landed {60000 - landed_before_c})")
        print(f"ok: cluster ingest: agent-a killed -9 after {killed_at} commits, agent-b took the task over and "
              f"drained after its chunk at commit {after_drain} (SIGTERM at {drained_at}), agent-c landed the rest "
              "(another attempt); every row landed once")

        worker = start("worker", "worker", "--worker-id", "worker-1", "--slots", "2")
        with psycopg.connect(pg_url, autocommit=True) as db:
            db.execute(
                f"INSERT INTO {SCHEMA}.customers SELECT i, 'c' || i, 'FR', timestamptz '2029-01-01 00:00:00+00' + i * interval '1 second', NULL "
                "FROM generate_series(216, 218) AS i"
            )
        built = subprocess.run(strata.command("build", "--cluster", amqp_url, "--select", "customers_by_country"),
                               env=env, capture_output=True, text=True, timeout=600)
        check(built.returncode == 0, f"strata build --cluster failed:\n{built.stdout}\n{built.stderr}")
        nodes = run_results(strata)
        source = nodes["source.ingest_check.crm.customers"]
        model = nodes["model.ingest_check.customers_by_country"]
        check(source["workers"] == ["agent-c"] and source["rows"] == 3, f"the source's record: {source}")
        check(model["workers"] == ["worker-1"] and model["status"] == "success", f"the model's record: {model}")
        tables = list(strata.warehouse.glob("*/customers_by_country"))
        counts = deltalake.DeltaTable(str(tables[0])).to_pyarrow_table().to_pylist()
        check(sum(row["customers"] for row in counts) == 221, f"customers_by_country after the cluster build: {counts}")
        print("ok: strata build --cluster lands the source on an ingest agent, then builds the model on a worker")

        for name, process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in processes:
            process.wait(timeout=60)
        check("drained" in log_of("agent-c") and "drained" in log_of("worker"),
              f"SIGTERM must drain the agent and the worker:\n{log_of('agent-c')}\n{log_of('worker')}")
        print("ok: SIGTERM drains the ingest agent and the worker")
    finally:
        for _, process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def check_s3_files(binary, s3_glob, local_dir):
    """Parquet files on the S3 server land into a warehouse on S3, equal to the same files on
    disk; a second run finds every file landed (by its ETag) and lands nothing."""
    work = Path(tempfile.mkdtemp(prefix="strata-ingest-s3-"))
    try:
        project = work / "project"
        (project / "models").mkdir(parents=True)
        (project / "dbt_project.yml").write_text("name: ingest_s3\nversion: '1'\nconfig-version: 2\n")
        (project / "models" / "sources.yml").write_text(
            "version: 2\nsources:\n  - name: raw_s3\n    tables:\n      - name: events\n"
            f"        ingest: {{connector: files, path: \"{s3_glob}\", files_per_commit: 2}}\n"
        )
        warehouse = "s3://strata-test/ingest-lake"
        command = [binary, "ingest", "--project-dir", str(project), "--warehouse", warehouse]
        for _ in range(2):
            result = subprocess.run(command, capture_output=True, text=True, timeout=600)
            if result.returncode != 0:
                fail(f"strata ingest from S3 failed:\n{result.stdout}\n{result.stderr}")
        expected = pa.concat_tables([pq.read_table(path) for path in sorted(Path(local_dir).glob("*.parquet"))])
        storage = {
            "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"], "AWS_REGION": os.environ["AWS_REGION"],
            "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"], "AWS_ALLOW_HTTP": "true",
        }
        landed = deltalake.DeltaTable(f"{warehouse}/raw_s3/events", storage_options=storage).to_pyarrow_table()
        check(landed.num_rows == expected.num_rows, f"S3 files: {landed.num_rows} rows, expected {expected.num_rows}")
        key = expected.column_names[0]
        check(sorted(landed.column(key).to_pylist(), key=str) == sorted(expected.column(key).to_pylist(), key=str),
              f"S3 files: column {key} differs")
        print(f"ok: {expected.num_rows} rows of Parquet files on S3 landed once into an s3:// warehouse")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strata", required=True)
    parser.add_argument("--s3-files", help="an s3:// glob of Parquet files; checks only them")
    parser.add_argument("--s3-local", help="the folder holding the same files on disk")
    parser.add_argument("--pg", default=os.environ.get("STRATA_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--mysql", default=os.environ.get("STRATA_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"))
    parser.add_argument("--amqp", default=os.environ.get("STRATA_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("STRATA_INGEST_SEED", "7")))
    args = parser.parse_args()
    if args.s3_files:
        check_s3_files(str(Path(args.strata).resolve()), args.s3_files, args.s3_local)
        return
    api = Api()
    server = start_api(api)
    base = f"http://127.0.0.1:{server.server_port}"
    setup_postgres(args.pg)
    setup_mysql(args.mysql)
    work = Path(tempfile.mkdtemp(prefix="strata-ingest-"))
    try:
        project = work / "project"
        write_project(project, base)
        tls_url, tls_wrong_host_url = tls_urls(args.pg)
        env = dict(os.environ, INGEST_PG_URL=args.pg, INGEST_MYSQL_URL=args.mysql, INGEST_API_TOKEN=TOKEN,
                   INGEST_PG_TLS_URL=tls_url, INGEST_PG_TLS_WRONG_HOST_URL=tls_wrong_host_url, STRATA_LOG="warn")
        strata = Strata(str(Path(args.strata).resolve()), project, env)

        # First run: everything, with one unreachable source.
        first = strata.run("ingest", "--exclude", "source:crm.big source:crm.cluster_big source:api.stream source:landing.drops source:shop.orders",
                           expect_ok=False)
        output = first.stdout + first.stderr
        if os.environ.get("INGEST_CHECK_VERBOSE"):
            print(output)
        check(first.returncode != 0, "a run with an unreachable source must fail")
        check("cannot reach source down.api" in output, f"the unreachable source is not named:\n{output}")
        check(TOKEN not in output, "the API token reached the output")
        check_every_type(strata, args.pg)
        check_mysql_every_type(strata, args.mysql)
        check_customers(strata, args.pg, 200)
        check_api(strata, api)
        check_flaky(strata, api, malformed_fixed=False)
        check_files(strata, second_round=False)
        check_tls(strata, output)
        print("ok: an unreachable source fails alone, naming itself; the others land")

        # Second run: nothing new lands twice.
        excluded = "source:down source:secure source:crm.big source:crm.cluster_big source:api.stream source:landing.drops source:shop"
        strata.run("ingest", "--exclude", excluded)
        check_customers(strata, args.pg, 200)
        check_api(strata, api)
        check_files(strata, second_round=False)
        check(len(bronze(strata, "crm", "every_type")) == 2 * len(EVERY_TYPE_ROWS), "full loads append a whole copy")
        print("ok: a second run lands nothing twice (a table without cursor lands a new full copy)")

        # Changes at the sources: inserts, updates, a new column, new API records, new files.
        with psycopg.connect(args.pg, autocommit=True) as db:
            db.execute(f"ALTER TABLE {SCHEMA}.customers ADD COLUMN tier text")
            db.execute(
                f"INSERT INTO {SCHEMA}.customers SELECT i, 'customer ' || i, 'NL', "
                "timestamptz '2027-01-01 00:00:00+00' + i * interval '1 second', 'gold' FROM generate_series(201, 210) AS i"
            )
            db.execute(
                f"UPDATE {SCHEMA}.customers SET country = 'SE', updated_at = timestamptz '2027-06-01 00:00:00+00' + id * interval '1 second' "
                "WHERE id IN (3, 50, 150)"
            )
            db.execute(f"ALTER TABLE {SCHEMA}.strict ADD COLUMN extra int")
        api.offset_records += [{"id": i, "name": f"item {i}", "price": i * 1.5} for i in range(30, 37)]
        api.malformed_page = False
        (project / "incoming" / "events-3.ndjson").write_text('{"id": 7, "type": "click", "at": "2026-01-03T00:00:00"}\n')
        third = strata.run("ingest", "--exclude", excluded, expect_ok=False)
        output = third.stdout + third.stderr
        check(third.returncode != 0 and "new: [extra]" in output, f"schema_drift: fail must name the column:\n{output}")
        check_customers(strata, args.pg, 213)
        tiers = [row["tier"] for row in bronze(strata, "crm", "customers")]
        check(tiers.count("gold") == 10 and tiers.count(None) == 203, "the new column lands; older rows read NULL")
        check_api(strata, api)
        check_flaky(strata, api, malformed_fixed=True)
        check_files(strata, second_round=True)
        print("ok: inserts, updates, a new column, new API records and new files land once; drift 'fail' names the column")
        strata.run("ingest", "--select", "source:crm.strict", "--full-refresh")
        strict = bronze(strata, "crm", "strict")
        check(len(strict) == 2 and all("extra" in row for row in strict) and {r["_batch_id"] for r in strict} == {3},
              f"--full-refresh lands the source again with its new columns: {strict}")
        print("ok: --full-refresh empties a bronze table and lands its source again")

        # Kill -9 trials, one per connector.
        def big_complete():
            ids = [row["id"] for row in bronze(strata, "crm", "big")]
            check(len(ids) == 60000 and len(set(ids)) == 60000, f"big: {len(ids)} rows, {len(set(ids))} distinct")

        def stream_complete():
            ids = [row["id"] for row in bronze(strata, "api", "stream")]
            check(sorted(ids) == list(range(1000)), f"stream: {len(ids)} rows, {len(set(ids))} distinct")

        def drops_complete():
            rows = bronze(strata, "landing", "drops")
            keys = {(row["file"], row["row"]) for row in rows}
            check(len(rows) == 2000 and len(keys) == 2000, f"drops: {len(rows)} rows, {len(keys)} distinct")

        kill_trials(strata, "source:crm.big", 5, args.seed, big_complete)
        kill_trials(strata, "source:shop.orders", 4, args.seed + 3, lambda: check_mysql_orders(strata, 30000))
        with mysql_connect(args.mysql) as db, db.cursor() as cursor:
            cursor.execute("INSERT INTO ingest_check_orders VALUES (30001, 1.00, '2027-01-01 00:00:00'), "
                           "(30002, 2.00, '2027-01-01 00:00:00')")
            cursor.execute("UPDATE ingest_check_orders SET updated_at = '2027-02-01' WHERE id = 7")
        strata.run("ingest", "--select", "source:shop.orders")
        ids = [row["id"] for row in bronze(strata, "shop", "orders")]
        check(len(ids) == 30003 and ids.count(7) == 2, f"mysql orders after changes: {len(ids)} rows")
        print("ok: MySQL incremental load after inserts and an update")
        kill_trials(strata, "source:api.stream", 4, args.seed + 1, stream_complete)
        kill_trials(strata, "source:landing.drops", 4, args.seed + 2, drops_complete)

        # build: the model's source lands first, then the model reads it.
        with psycopg.connect(args.pg, autocommit=True) as db:
            db.execute(
                f"INSERT INTO {SCHEMA}.customers SELECT i, 'c' || i, 'DE', timestamptz '2028-01-01 00:00:00+00' + i * interval '1 second', NULL "
                "FROM generate_series(211, 215) AS i"
            )
        built = strata.run("build", "--select", "customers_by_country")
        check("source crm.customers" in built.stdout, f"build did not ingest first:\n{built.stdout}")
        counts = deltalake.DeltaTable(str(strata.warehouse / "ingest_check" / "customers_by_country")).to_pyarrow_table().to_pylist() \
            if (strata.warehouse / "ingest_check").exists() else None
        if counts is None:
            tables = [p for p in strata.warehouse.glob("*/customers_by_country")]
            check(tables, "build wrote no customers_by_country table")
            counts = deltalake.DeltaTable(str(tables[0])).to_pyarrow_table().to_pylist()
        check(sum(row["customers"] for row in counts) == 218, f"customers_by_country: {counts}")
        print("ok: strata build lands the model's sources first (ingest_bronze >> process_silver)")

        check_cluster(strata, args.pg, args.amqp, args.seed)
        check_mysql_tls(strata.binary, work, args.mysql)
    finally:
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print("ingest: all checks passed")


if __name__ == "__main__":
    main()
