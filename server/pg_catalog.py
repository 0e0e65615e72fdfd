"""pg_catalog, built live from the Iceberg catalog, and the PostgreSQL functions clients call.

psql, SQLAlchemy, asyncpg, psycopg, JDBC and BI tools learn about a database by querying
pg_catalog tables and calling functions such as `format_type` or `pg_table_is_visible`. The
tables are Arrow tables built per statement from the warehouse (so they are never stale); the
functions are rewrites of the statement (for session-dependent ones: `current_schema()`, the
search path for `pg_table_is_visible`) or DataFusion UDFs (for pure ones: `format_type`).

OIDs of schemas, tables and indexes are stable hashes of their names, so they agree across
statements and connections.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

import pyarrow as pa
from datafusion import udf
from sqlglot import exp

from omnilake import errors as E
from omnilake.catalog.types import OIDS, SqlType
from omnilake.engine.tables import load
from omnilake.server.codecs import PG_OID_KEY

if TYPE_CHECKING:
    from omnilake.engine.engine import Engine, Session

DATABASE_OID = 16384
PG_CATALOG_OID = 11
PUBLIC_OID = 2200
INFORMATION_SCHEMA_OID = 13000
OWNER_OID = 10
HEAP_AM, BTREE_AM, HNSW_AM, IVFFLAT_AM = 2, 403, 16390, 16391

# pg_type rows: oid -> (name, length, category, array oid, element oid)
TYPES: dict[int, tuple[str, int, str, int, int]] = {
    16: ("bool", 1, "B", 1000, 0), 17: ("bytea", -1, "U", 1001, 0), 18: ("char", 1, "Z", 1002, 0),
    19: ("name", 64, "S", 1003, 0), 20: ("int8", 8, "N", 1016, 0), 21: ("int2", 2, "N", 1005, 0),
    22: ("int2vector", -1, "A", 1006, 21), 23: ("int4", 4, "N", 1007, 0),
    24: ("regproc", 4, "N", 1008, 0), 25: ("text", -1, "S", 1009, 0), 26: ("oid", 4, "N", 1028, 0),
    30: ("oidvector", -1, "A", 1013, 26), 114: ("json", -1, "U", 199, 0),
    700: ("float4", 4, "N", 1021, 0), 701: ("float8", 8, "N", 1022, 0),
    705: ("unknown", -2, "X", 0, 0), 1042: ("bpchar", -1, "S", 1014, 0),
    1043: ("varchar", -1, "S", 1015, 0), 1082: ("date", 4, "D", 1182, 0),
    1083: ("time", 8, "D", 1183, 0), 1114: ("timestamp", 8, "D", 1115, 0),
    1184: ("timestamptz", 8, "D", 1185, 0), 1186: ("interval", 16, "T", 1187, 0),
    1700: ("numeric", -1, "N", 1231, 0), 2205: ("regclass", 4, "N", 2210, 0),
    2206: ("regtype", 4, "N", 2211, 0), 2950: ("uuid", 16, "U", 2951, 0),
    3802: ("jsonb", -1, "U", 3807, 0), 2249: ("record", -1, "P", 2287, 0),
    2278: ("void", 4, "P", 0, 0), 1560: ("bit", -1, "V", 1561, 0),
    1562: ("varbit", -1, "V", 1563, 0),
    OIDS["vector"]: ("vector", -1, "U", OIDS["vector"] + 1, 0),
    1000: ("_bool", -1, "A", 0, 16), 1001: ("_bytea", -1, "A", 0, 17),
    1005: ("_int2", -1, "A", 0, 21), 1007: ("_int4", -1, "A", 0, 23),
    1016: ("_int8", -1, "A", 0, 20), 1009: ("_text", -1, "A", 0, 25),
    1015: ("_varchar", -1, "A", 0, 1043), 1021: ("_float4", -1, "A", 0, 700),
    1022: ("_float8", -1, "A", 0, 701), 1028: ("_oid", -1, "A", 0, 26),
    1231: ("_numeric", -1, "A", 0, 1700), 1182: ("_date", -1, "A", 0, 1082),
    1115: ("_timestamp", -1, "A", 0, 1114), 1185: ("_timestamptz", -1, "A", 0, 1184),
    2951: ("_uuid", -1, "A", 0, 2950), 199: ("_json", -1, "A", 0, 114),
    3807: ("_jsonb", -1, "A", 0, 3802), OIDS["vector"] + 1: ("_vector", -1, "A", 0, OIDS["vector"]),
}
_TYPE_BY_NAME = {name: oid for oid, (name, *_rest) in TYPES.items()}
_FORMAT_NAMES = {"bool": "boolean", "int2": "smallint", "int4": "integer", "int8": "bigint",
                 "float4": "real", "float8": "double precision", "varchar": "character varying",
                 "bpchar": "character", "timestamp": "timestamp without time zone",
                 "timestamptz": "timestamp with time zone", "time": "time without time zone"}
_TYPE_ALIASES = {"integer": "int4", "int": "int4", "bigint": "int8", "smallint": "int2",
                 "boolean": "bool", "real": "float4", "double precision": "float8",
                 "character varying": "varchar", "timestamp without time zone": "timestamp",
                 "timestamp with time zone": "timestamptz", "decimal": "numeric"}
EXTENSIONS = [("plpgsql", "1.0", PG_CATALOG_OID), ("vector", "0.8.0", PUBLIC_OID)]


def stable_oid(kind: str, *names: str) -> int:
    return 100_000 + zlib.crc32(f"{kind}:{'.'.join(names)}".encode()) % 2_000_000_000


def namespace_oid(name: str) -> int:
    return {"pg_catalog": PG_CATALOG_OID, "public": PUBLIC_OID,
            "information_schema": INFORMATION_SCHEMA_OID}.get(name) or stable_oid("n", name)


def type_modifier(t: SqlType) -> int:
    if t.name == "varchar" and t.params:
        return t.params[0] + 4
    if t.name == "numeric":
        return ((t.params[0] << 16) | t.params[1]) + 4
    if t.name == "vector":
        return t.params[0]
    return -1


def format_type(oid: int | None, typmod: int | None) -> str | None:
    if oid is None:
        return None
    entry = TYPES.get(oid)
    if entry is None:
        return "???"
    name = entry[0]
    if name.startswith("_"):
        inner = format_type(entry[4], typmod)
        return f"{inner}[]"
    text = _FORMAT_NAMES.get(name, name)
    if typmod is not None and typmod >= 0:
        if name in ("varchar", "bpchar"):
            text += f"({typmod - 4})"
        elif name == "numeric":
            value = typmod - 4
            text += f"({value >> 16},{value & 0xFFFF})"
        elif name == "vector":
            text += f"({typmod})"
    return text


# -- table schemas (column name: Arrow type); "I" int64 oid, "S" text, "B" bool, "i" int32,
#    "h" int16, "L" list<int16>, "T" list<text>, "O" list<int64>
_T = {"I": pa.int64(), "S": pa.large_string(), "B": pa.bool_(), "i": pa.int32(),
      "h": pa.int16(), "L": pa.list_(pa.int16()), "T": pa.list_(pa.large_string()),
      "O": pa.list_(pa.int64()), "F": pa.float32(), "C": pa.large_string()}
_CHAR = {PG_OID_KEY: b"18"}  # PostgreSQL's one-byte "char": asyncpg reads it as bytes


def _schema(spec: str) -> pa.Schema:
    fields = []
    for item in spec.split():
        name, code = item.rsplit(":", 1)
        fields.append(pa.field(name, _T[code], metadata=_CHAR if code == "C" else None))
    return pa.schema(fields)


SCHEMAS = {name: _schema(spec) for name, spec in {
    "pg_namespace": "oid:I nspname:S nspowner:I nspacl:T",
    "pg_class": "oid:I relname:S relnamespace:I reltype:I reloftype:I relowner:I relam:I "
                "relfilenode:I reltablespace:I relpages:i reltuples:F relallvisible:i "
                "reltoastrelid:I relhasindex:B relisshared:B relpersistence:C relkind:C "
                "relnatts:h relchecks:h relhasrules:B relhastriggers:B relhassubclass:B "
                "relrowsecurity:B relforcerowsecurity:B relispopulated:B relreplident:C "
                "relispartition:B relrewrite:I relfrozenxid:I relminmxid:I relacl:T "
                "reloptions:T relpartbound:S",
    "pg_attribute": "attrelid:I attname:S atttypid:I attstattarget:i attlen:h attnum:h "
                    "attndims:i attcacheoff:i atttypmod:i attbyval:B attalign:C attstorage:C "
                    "attcompression:C attnotnull:B atthasdef:B atthasmissing:B attidentity:C "
                    "attgenerated:C attisdropped:B attislocal:B attinhcount:i attcollation:I "
                    "attacl:T attoptions:T attfdwoptions:T",
    "pg_type": "oid:I typname:S typnamespace:I typowner:I typlen:h typbyval:B typtype:C "
               "typcategory:C typispreferred:B typisdefined:B typdelim:C typrelid:I "
               "typsubscript:S typelem:I typarray:I typinput:S typoutput:S typreceive:S "
               "typsend:S typmodin:S typmodout:S typanalyze:S typalign:C typstorage:C "
               "typnotnull:B typbasetype:I typtypmod:i typndims:i typcollation:I "
               "typdefaultbin:S typdefault:S typacl:T",
    "pg_index": "indexrelid:I indrelid:I indnatts:h indnkeyatts:h indisunique:B "
                "indnullsnotdistinct:B indisprimary:B indisexclusion:B indimmediate:B "
                "indisclustered:B indisvalid:B indcheckxmin:B indisready:B indislive:B "
                "indisreplident:B indkey:L indcollation:O indclass:O indoption:L indexprs:S "
                "indpred:S",
    "pg_constraint": "oid:I conname:S connamespace:I contype:C condeferrable:B condeferred:B "
                     "convalidated:B conrelid:I contypid:I conindid:I conparentid:I "
                     "confrelid:I confupdtype:C confdeltype:C confmatchtype:C conislocal:B "
                     "coninhcount:i connoinherit:B conkey:L confkey:L conpfeqop:O conppeqop:O "
                     "conffeqop:O conexclop:O conbin:S",
    "pg_attrdef": "oid:I adrelid:I adnum:h adbin:S",
    "pg_description": "objoid:I classoid:I objsubid:i description:S",
    "pg_database": "oid:I datname:S datdba:I encoding:i datlocprovider:C datistemplate:B "
                   "datallowconn:B datconnlimit:i datfrozenxid:I datminmxid:I "
                   "dattablespace:I datcollate:S datctype:S daticulocale:S "
                   "datcollversion:S datacl:T",
    "pg_settings": "name:S setting:S unit:S category:S short_desc:S extra_desc:S context:S "
                   "vartype:S source:S min_val:S max_val:S enumvals:T boot_val:S reset_val:S "
                   "sourcefile:S sourceline:i pending_restart:B",
    "pg_roles": "rolname:S rolsuper:B rolinherit:B rolcreaterole:B rolcreatedb:B "
                "rolcanlogin:B rolreplication:B rolconnlimit:i rolpassword:S "
                "rolvaliduntil:S rolbypassrls:B rolconfig:T oid:I",
    "pg_user": "usename:S usesysid:I usecreatedb:B usesuper:B userepl:B usebypassrls:B "
               "passwd:S valuntil:S useconfig:T",
    "pg_am": "oid:I amname:S amhandler:S amtype:C",
    "pg_extension": "oid:I extname:S extowner:I extnamespace:I extrelocatable:B extversion:S "
                    "extconfig:O extcondition:T",
    "pg_tables": "schemaname:S tablename:S tableowner:S tablespace:S hasindexes:B "
                 "hasrules:B hastriggers:B rowsecurity:B",
    "pg_views": "schemaname:S viewname:S viewowner:S definition:S",
    "pg_matviews": "schemaname:S matviewname:S matviewowner:S tablespace:S hasindexes:B "
                   "ispopulated:B definition:S",
    "pg_indexes": "schemaname:S tablename:S indexname:S tablespace:S indexdef:S",
    "pg_proc": "oid:I proname:S pronamespace:I proowner:I prolang:I prokind:C prorettype:I "
               "proargtypes:O proretset:B",
    "pg_inherits": "inhrelid:I inhparent:I inhseqno:i inhdetachpending:B",
    "pg_enum": "oid:I enumtypid:I enumsortorder:F enumlabel:S",
    "pg_range": "rngtypid:I rngsubtype:I rngmultitypid:I rngcollation:I",
    "pg_collation": "oid:I collname:S collnamespace:I collowner:I collprovider:C "
                    "collisdeterministic:B collencoding:i collcollate:S collctype:S",
    "pg_tablespace": "oid:I spcname:S spcowner:I spcacl:T spcoptions:T",
    "pg_trigger": "oid:I tgrelid:I tgparentid:I tgname:S tgfoid:I tgtype:h tgenabled:C "
                  "tgisinternal:B tgconstrrelid:I tgconstrindid:I tgconstraint:I",
    "pg_policy": "oid:I polname:S polrelid:I polcmd:C polpermissive:B polroles:O polqual:S "
                 "polwithcheck:S",
    "pg_sequence": "seqrelid:I seqtypid:I seqstart:I seqincrement:I seqmax:I seqmin:I "
                   "seqcache:I seqcycle:B",
    "pg_depend": "classid:I objid:I objsubid:i refclassid:I refobjid:I refobjsubid:i "
                 "deptype:C",
    "pg_rewrite": "oid:I rulename:S ev_class:I ev_type:C ev_enabled:C is_instead:B",
    "pg_statistic_ext": "oid:I stxrelid:I stxname:S stxnamespace:I stxowner:I stxkeys:L "
                        "stxkind:T stxstattarget:i stxexprs:S",
    "pg_statistic_ext_data": "stxoid:I stxdinherit:B",
    "pg_publication": "oid:I pubname:S pubowner:I puballtables:B pubinsert:B pubupdate:B "
                      "pubdelete:B pubtruncate:B pubviaroot:B",
    "pg_publication_rel": "oid:I prpubid:I prrelid:I prqual:S prattrs:L",
    "pg_publication_namespace": "oid:I pnpubid:I pnnspid:I",
    "pg_subscription": "oid:I subname:S subowner:I subenabled:B",
    "pg_foreign_table": "ftrelid:I ftserver:I ftoptions:T",
    "pg_partitioned_table": "partrelid:I partstrat:C partnatts:h partdefid:I partattrs:L",
    "pg_event_trigger": "oid:I evtname:S evtevent:S evtowner:I evtfoid:I evtenabled:C",
    "pg_stat_activity": "datid:I datname:S pid:i usesysid:I usename:S application_name:S "
                        "client_addr:S client_port:i backend_start:S state:S query:S",
    "pg_stat_user_tables": "relid:I schemaname:S relname:S n_live_tup:I",
    "pg_shdescription": "objoid:I classoid:I description:S",
    "pg_opclass": "oid:I opcmethod:I opcname:S opcnamespace:I opcowner:I opcfamily:I "
                  "opcintype:I opcdefault:B opckeytype:I",
    "pg_conversion": "oid:I conname:S connamespace:I conowner:I conforencoding:i "
                     "contoencoding:i conproc:S condefault:B",
    "pg_language": "oid:I lanname:S lanowner:I lanispl:B lanpltrusted:B",
    "pg_aggregate": "aggfnoid:I aggkind:C",
    "pg_operator": "oid:I oprname:S oprnamespace:I oprowner:I oprkind:C oprleft:I "
                   "oprright:I oprresult:I",
    "pg_auth_members": "oid:I roleid:I member:I grantor:I admin_option:B",
    "pg_db_role_setting": "setdatabase:I setrole:I setconfig:T",
    "pg_cast": "oid:I castsource:I casttarget:I castfunc:I castcontext:C castmethod:C",
}.items()}


def _table(name: str, rows: list[dict]) -> pa.Table:
    schema = SCHEMAS[name]
    return pa.Table.from_pylist(rows, schema=schema)


class PgCatalog:
    """The builder the engine calls for `pg_catalog.*` (and unqualified `pg_*`) tables."""

    def __init__(self, engine: "Engine", port: int = 5433):
        self.engine = engine
        self.port = port
        self.implicit = set(SCHEMAS)
        self.constraint_defs: dict[int, str] = {}
        self.index_defs: dict[int, str] = {}
        self.class_names: dict[int, str] = {}

    @classmethod
    def install(cls, engine: "Engine", server=None) -> "PgCatalog":
        catalog = cls(engine, getattr(server, "port", 5433))
        engine.virtual_schemas["pg_catalog"] = catalog
        engine.rewriters.append(catalog.rewrite)
        _register_udfs(engine.datafusion, catalog)
        return catalog

    # -- tables ---------------------------------------------------------------------------
    def __call__(self, session: "Session", name: str) -> pa.Table:
        builder = getattr(self, "_" + name, None)
        if name not in SCHEMAS:
            raise E.UndefinedTable(f'relation "pg_catalog.{name}" does not exist')
        if builder is None:
            return SCHEMAS[name].empty_table()
        return builder(session)

    def _namespaces(self) -> list[str]:
        return sorted(".".join(ns) for ns in self.engine.warehouse.catalog.list_namespaces())

    def _relations(self) -> list[tuple[str, str, object]]:
        """(namespace, table, TableRef) for every table in the warehouse."""
        out = []
        for ns in self._namespaces():
            for ident in self.engine.warehouse.catalog.list_tables(ns):
                try:
                    out.append((ns, ident[-1], load(self.engine, ns, ident[-1])))
                except E.Error:
                    continue  # dropped meanwhile
        return out

    def _indexes(self, relations) -> list[dict]:
        """Primary keys (Iceberg identifier fields) as unique indexes."""
        out = []
        for ns, name, ref in relations:
            ids = list(ref.table.schema().identifier_field_ids)
            if not ids:
                continue
            positions = {c.field_id: i for i, c in enumerate(ref.columns(), start=1)}
            names = {c.field_id: c.name for c in ref.columns()}
            keys = [positions[i] for i in ids if i in positions]
            index_name = f"{name}_pkey"
            cols = ", ".join(names[i] for i in ids if i in names)
            out.append({"ns": ns, "table": name, "name": index_name,
                        "oid": stable_oid("i", ns, index_name), "rel": stable_oid("r", ns, name),
                        "keys": keys, "columns": cols, "am": BTREE_AM,
                        "def": f"CREATE UNIQUE INDEX {index_name} ON {ns}.{name} USING btree ({cols})"})
        return out

    def _pg_namespace(self, session) -> pa.Table:
        names = ["pg_catalog", "information_schema"] + self._namespaces()
        return _table("pg_namespace", [{"oid": namespace_oid(n), "nspname": n,
                                        "nspowner": OWNER_OID} for n in names])

    def _pg_class(self, session) -> pa.Table:
        relations = self._relations()
        indexes = self._indexes(relations)
        indexed = {(i["ns"], i["table"]) for i in indexes}
        rows = []
        for ns, name, ref in relations:
            oid = stable_oid("r", ns, name)
            self.class_names[oid] = name
            snapshot = ref.table.current_snapshot()
            count = int((snapshot.summary or {}).get("total-records", 0)) if snapshot else 0
            rows.append(self._class_row(oid, name, namespace_oid(ns), "r", len(ref.columns()),
                                        (ns, name) in indexed, HEAP_AM, float(count)))
        for index in indexes:
            self.class_names[index["oid"]] = index["name"]
            rows.append(self._class_row(index["oid"], index["name"], namespace_oid(index["ns"]),
                                        "i", len(index["keys"]), False, index["am"], 0.0))
        return _table("pg_class", rows)

    @staticmethod
    def _class_row(oid, name, namespace, kind, natts, has_index, am, tuples) -> dict:
        return {"oid": oid, "relname": name, "relnamespace": namespace, "reltype": 0,
                "reloftype": 0, "relowner": OWNER_OID, "relam": am, "relfilenode": oid,
                "reltablespace": 0, "relpages": 0, "reltuples": tuples, "relallvisible": 0,
                "reltoastrelid": 0, "relhasindex": has_index, "relisshared": False,
                "relpersistence": "p", "relkind": kind, "relnatts": natts, "relchecks": 0,
                "relhasrules": False, "relhastriggers": False, "relhassubclass": False,
                "relrowsecurity": False, "relforcerowsecurity": False, "relispopulated": True,
                "relreplident": "d", "relispartition": False, "relrewrite": 0,
                "relfrozenxid": 0, "relminmxid": 0}

    def _pg_attribute(self, session) -> pa.Table:
        rows = []
        relations = self._relations()
        for ns, name, ref in relations:
            oid = stable_oid("r", ns, name)
            generated = ref.generated()
            for number, c in enumerate(ref.columns(), start=1):
                t = c.sql_type
                type_oid = t.oid
                rows.append({"attrelid": oid, "attname": c.name, "atttypid": type_oid,
                             "attstattarget": -1, "attlen": TYPES.get(type_oid, ("", -1))[1],
                             "attnum": number, "attndims": 0, "attcacheoff": -1,
                             "atttypmod": type_modifier(t), "attbyval": t.name in (
                                 "boolean", "smallint", "integer", "bigint", "real",
                                 "double precision", "date", "timestamp", "timestamptz"),
                             "attalign": "i", "attstorage": "p", "attcompression": "",
                             "attnotnull": c.required, "atthasdef": c.name in generated,
                             "atthasmissing": False, "attidentity": "",
                             "attgenerated": "s" if c.name in generated else "",
                             "attisdropped": False, "attislocal": True, "attinhcount": 0,
                             "attcollation": 0})
        for index in self._indexes(relations):
            for number, _key in enumerate(index["keys"], start=1):
                rows.append({"attrelid": index["oid"], "attname": index["columns"].split(", ")[number - 1],
                             "atttypid": 0, "attnum": number, "attnotnull": False,
                             "atthasdef": False, "attisdropped": False, "attidentity": "",
                             "attgenerated": "", "atttypmod": -1, "attlen": -1,
                             "attislocal": True, "attinhcount": 0})
        return _table("pg_attribute", rows)

    def _pg_attrdef(self, session) -> pa.Table:
        rows = []
        for ns, name, ref in self._relations():
            oid = stable_oid("r", ns, name)
            generated = ref.generated()
            for number, c in enumerate(ref.columns(), start=1):
                if c.name in generated:
                    rows.append({"oid": stable_oid("d", ns, name, c.name), "adrelid": oid,
                                 "adnum": number, "adbin": generated[c.name]})
        return _table("pg_attrdef", rows)

    def _pg_type(self, session) -> pa.Table:
        rows = []
        for oid, (name, length, category, array, element) in TYPES.items():
            rows.append({"oid": oid, "typname": name,
                         "typnamespace": PUBLIC_OID if name in ("vector", "_vector")
                         else PG_CATALOG_OID,
                         "typowner": OWNER_OID, "typlen": length, "typbyval": 0 < length <= 8,
                         "typtype": "p" if category == "P" else "b", "typcategory": category,
                         "typispreferred": False, "typisdefined": True, "typdelim": ",",
                         "typrelid": 0, "typsubscript": "-", "typelem": element, "typarray": array,
                         "typinput": "array_in" if category == "A" else f"{name}_in",
                         "typoutput": "array_out" if category == "A" else f"{name}_out",
                         "typreceive": "array_recv" if category == "A" else f"{name}_recv",
                         "typsend": "array_send" if category == "A" else f"{name}_send",
                         "typmodin": "-", "typmodout": "-", "typanalyze": "-", "typalign": "i",
                         "typstorage": "p", "typnotnull": False, "typbasetype": 0,
                         "typtypmod": -1, "typndims": 0, "typcollation": 0})
        return _table("pg_type", rows)

    def _pg_index(self, session) -> pa.Table:
        rows = []
        for index in self._indexes(self._relations()):
            self.index_defs[index["oid"]] = index["def"]
            rows.append({"indexrelid": index["oid"], "indrelid": index["rel"],
                         "indnatts": len(index["keys"]), "indnkeyatts": len(index["keys"]),
                         "indisunique": True, "indnullsnotdistinct": False,
                         "indisprimary": True, "indisexclusion": False, "indimmediate": True,
                         "indisclustered": False, "indisvalid": True, "indcheckxmin": False,
                         "indisready": True, "indislive": True, "indisreplident": False,
                         "indkey": index["keys"], "indcollation": [0] * len(index["keys"]),
                         "indclass": [0] * len(index["keys"]),
                         "indoption": [0] * len(index["keys"])})
        return _table("pg_index", rows)

    def _pg_indexes(self, session) -> pa.Table:
        return _table("pg_indexes", [{"schemaname": i["ns"], "tablename": i["table"],
                                      "indexname": i["name"], "indexdef": i["def"]}
                                     for i in self._indexes(self._relations())])

    def _pg_constraint(self, session) -> pa.Table:
        rows = []
        for index in self._indexes(self._relations()):
            oid = stable_oid("c", index["ns"], index["name"])
            self.constraint_defs[oid] = f"PRIMARY KEY ({index['columns']})"
            rows.append({"oid": oid, "conname": index["name"],
                         "connamespace": namespace_oid(index["ns"]), "contype": "p",
                         "condeferrable": False, "condeferred": False, "convalidated": True,
                         "conrelid": index["rel"], "contypid": 0, "conindid": index["oid"],
                         "conparentid": 0, "confrelid": 0, "confupdtype": " ",
                         "confdeltype": " ", "confmatchtype": " ", "conislocal": True,
                         "coninhcount": 0, "connoinherit": True, "conkey": index["keys"]})
        return _table("pg_constraint", rows)

    def _pg_database(self, session) -> pa.Table:
        return _table("pg_database", [{"oid": DATABASE_OID, "datname": "omnilake",
                                       "datdba": OWNER_OID, "encoding": 6, "datlocprovider": "c",
                                       "datistemplate": False, "datallowconn": True,
                                       "datconnlimit": -1, "dattablespace": 1663,
                                       "datcollate": "C", "datctype": "C"}])

    def _pg_settings(self, session) -> pa.Table:
        return _table("pg_settings", [{"name": k, "setting": v, "category": "OmniLake",
                                       "vartype": "string", "source": "session",
                                       "context": "user", "boot_val": v, "reset_val": v}
                                      for k, v in sorted(session.variables.items())])

    def _roles(self, session) -> list[tuple[str, bool, int]]:
        from omnilake.catalog.users import Users
        users = [(u.name, u.superuser) for u in Users(self.engine.warehouse).list()]
        if not users:
            users = [(session.variables.get("user", "omnilake"), True)]
        return [(name, superuser, stable_oid("u", name)) for name, superuser in users]

    def _pg_roles(self, session) -> pa.Table:
        return _table("pg_roles", [{"rolname": n, "rolsuper": s, "rolinherit": True,
                                    "rolcreaterole": s, "rolcreatedb": s, "rolcanlogin": True,
                                    "rolreplication": False, "rolconnlimit": -1,
                                    "rolpassword": "********", "rolbypassrls": s, "oid": o}
                                   for n, s, o in self._roles(session)])

    def _pg_user(self, session) -> pa.Table:
        return _table("pg_user", [{"usename": n, "usesysid": o, "usecreatedb": s,
                                   "usesuper": s, "userepl": False, "usebypassrls": s,
                                   "passwd": "********"} for n, s, o in self._roles(session)])

    def _pg_am(self, session) -> pa.Table:
        return _table("pg_am", [{"oid": o, "amname": n, "amhandler": f"{n}handler", "amtype": t}
                                for o, n, t in [(HEAP_AM, "heap", "t"), (BTREE_AM, "btree", "i"),
                                                (HNSW_AM, "hnsw", "i"),
                                                (IVFFLAT_AM, "ivfflat", "i")]])

    def _pg_extension(self, session) -> pa.Table:
        return _table("pg_extension", [{"oid": stable_oid("e", n), "extname": n,
                                        "extowner": OWNER_OID, "extnamespace": ns,
                                        "extrelocatable": n == "vector", "extversion": v}
                                       for n, v, ns in EXTENSIONS])

    def _pg_tables(self, session) -> pa.Table:
        relations = self._relations()
        indexed = {(i["ns"], i["table"]) for i in self._indexes(relations)}
        return _table("pg_tables", [{"schemaname": ns, "tablename": name,
                                     "tableowner": "omnilake", "hasindexes": (ns, name) in indexed,
                                     "hasrules": False, "hastriggers": False,
                                     "rowsecurity": False} for ns, name, _ in relations])

    def _pg_tablespace(self, session) -> pa.Table:
        return _table("pg_tablespace", [{"oid": 1663, "spcname": "pg_default",
                                         "spcowner": OWNER_OID}])

    def _pg_language(self, session) -> pa.Table:
        return _table("pg_language", [{"oid": 13, "lanname": "sql", "lanowner": OWNER_OID,
                                       "lanispl": False, "lanpltrusted": True}])

    def refresh_names(self) -> None:
        """Fill the oid -> name/definition maps the UDFs read (normally filled as a side
        effect of building pg_class / pg_constraint / pg_index for the same statement)."""
        self._pg_class(None)
        self._pg_constraint(None)
        self._pg_index(None)

    # -- statement rewrites ---------------------------------------------------------------
    def visible_oids(self, session: "Session") -> list[int]:
        ns = session.schema
        names = [ident[-1] for ident in self.engine.warehouse.catalog.list_tables(ns)] \
            if ns in self._namespaces() else []
        oids = [stable_oid("r", ns, n) for n in names]
        oids += [stable_oid("i", ns, f"{n}_pkey") for n in names]
        return oids

    def rewrite(self, session: "Session", tree: exp.Expression) -> exp.Expression:
        if not _mentions_catalog(tree):
            return tree
        expanding = any(isinstance(n, exp.Anonymous) and n.name.lower() == "_pg_expandarray"
                        for n in tree.walk())
        for node in reversed(list(tree.walk())):  # children before their parents
            new = (expanding and _expandarray(node)) or self._rewrite_node(session, node)
            if new is not node:
                if node is tree:
                    tree = new
                else:
                    node.replace(new)
        return tree

    def _rewrite_node(self, session: "Session", node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Dot) and isinstance(node.this, exp.Identifier) \
                and node.this.name.lower() == "pg_catalog" and not isinstance(
                    node.expression, exp.Identifier):
            return node.expression  # pg_catalog.fn(...), already rewritten
        if isinstance(node, exp.Collate):
            return node.this
        if isinstance(node, exp.Operator):
            return _operator(node)
        if isinstance(node, exp.Cast):
            return self._cast(session, node)
        if isinstance(node, exp.CurrentSchema):
            return exp.Literal.string(session.schema)
        if isinstance(node, exp.CurrentSchemas):
            return exp.Array(expressions=[exp.Literal.string(s) for s in (
                ["pg_catalog", session.schema] if node.this and node.this.this else [session.schema])])
        if isinstance(node, (exp.CurrentUser, exp.SessionUser)):
            return exp.Literal.string(session.variables.get("user", "omnilake"))
        if isinstance(node, exp.CurrentDatabase):
            return exp.Literal.string("omnilake")
        if isinstance(node, exp.Column) and not node.table and node.name.lower() in (
                "current_user", "session_user", "user", "current_role") and not node.this.quoted:
            return exp.Literal.string(session.variables.get("user", "omnilake"))
        if isinstance(node, exp.Column) and not node.table and node.name.lower() == "current_catalog":
            return exp.Literal.string("omnilake")
        if isinstance(node, exp.Anonymous):
            return self._function(session, node)
        if isinstance(node, exp.Select) and self._reads_empty_table(node):
            for sub in list(node.find_all(exp.Subquery)):  # no rows: nothing to compute
                if sub.parent_select is node and _is_scalar_position(sub):
                    sub.replace(exp.Null())
            return node
        if isinstance(node, (exp.EQ, exp.NEQ)) and isinstance(node.expression, exp.Literal) \
                and node.expression.is_string and node.expression.this.startswith("{") \
                and node.expression.this.endswith("}"):
            node.set("expression", _array_literal(node.expression.this))
            return node
        if isinstance(node, exp.Table) and isinstance(node.this, exp.Func) \
                and node.args.get("db") is not None and node.args["db"].name.lower() == "pg_catalog":
            node.set("db", None)  # pg_catalog.unnest(...)
        if isinstance(node, exp.Table) and isinstance(node.this, (exp.Explode, exp.Unnest)):
            alias = node.args.get("alias")
            if alias is not None and not alias.columns:  # unnest(a) x: x names the column too
                alias.set("columns", [alias.this.copy()])
            return node
        if isinstance(node, exp.Subquery) and _is_scalar_position(node):
            if self._reads_empty_table(node.this) or _unnests_null_column(node.this):
                return exp.Null()  # joins with an always-empty catalog table: no row
            return _aggregated(node)
        if isinstance(node, exp.Array) and len(node.expressions) == 1 and isinstance(
                node.expressions[0], (exp.Select, exp.Subquery)):
            select = node.expressions[0]
            select = select.this if isinstance(select, exp.Subquery) else select
            if self._reads_empty_table(select) or _unnests_null_column(select):
                return exp.Null()
            return _array_of(node.expressions[0])
        return node

    def _reads_empty_table(self, select: exp.Select) -> bool:
        """True when an inner-joined table of `select` is a catalog table OmniLake keeps empty
        (pg_collation, pg_inherits, ...): DataFusion cannot plan every correlated subquery
        PostgreSQL can, but a subquery over an empty join has no rows either way."""
        tables = [select.args.get("from_") or select.args.get("from")]
        tables = [t.this for t in tables if t is not None]
        tables += [j.this for j in select.args.get("joins") or []
                   if (j.side or "").upper() not in ("LEFT", "FULL")]
        for table in tables:
            if isinstance(table, exp.Table) and isinstance(table.this, exp.Identifier):
                name = table.name
                db = table.args.get("db")
                if (db is None or db.name.lower() == "pg_catalog") and name in SCHEMAS \
                        and not hasattr(self, "_" + name):
                    return True
        return False

    def _function(self, session: "Session", node: exp.Anonymous) -> exp.Expression:
        name = node.name.lower()
        args = node.expressions
        text = lambda v: exp.Literal.string(v)  # noqa: E731
        null_text = exp.cast(exp.Null(), "TEXT")
        if name == "version":
            return text(f"PostgreSQL {session.variables.get('server_version', '16.4')} "
                        "on x86_64-pc-linux-gnu, compiled by OmniLake, 64-bit")
        if name == "pg_table_is_visible":
            oids = self.visible_oids(session)
            if not oids:
                return exp.false()
            return exp.In(this=exp.cast(args[0], "BIGINT"),
                          expressions=[exp.Literal.number(o) for o in oids])
        if name in ("pg_type_is_visible", "pg_function_is_visible", "pg_collation_is_visible",
                    "pg_opclass_is_visible", "pg_conversion_is_visible", "has_table_privilege",
                    "has_schema_privilege", "has_database_privilege", "has_column_privilege",
                    "has_any_column_privilege", "has_function_privilege", "pg_has_role",
                    "has_sequence_privilege", "has_type_privilege"):
            return exp.true()
        if name in ("pg_is_in_recovery", "pg_is_other_temp_schema", "pg_relation_is_publishable"):
            return exp.false()
        if name in ("current_schemas", "current_schema"):
            implicit = name == "current_schemas" and args and args[0].name.lower() in ("true", "t")
            schemas = (["pg_catalog"] if implicit else []) + [session.schema]
            if name == "current_schema":
                return text(session.schema)
            return exp.Array(expressions=[text(s) for s in schemas])
        if name == "current_setting":
            key = args[0].name.lower() if args else ""
            if key in session.variables:
                return text(session.variables[key])
            if len(args) > 1 and args[1].name.lower() in ("true", "t"):
                return null_text
            raise E.UndefinedObject(f'unrecognized configuration parameter "{key}"')
        if name == "set_config":
            key, value = args[0].name.lower(), args[1].name
            session.variables[key] = value
            return text(value)
        if name in ("current_database", "current_catalog"):
            return text("omnilake")
        if name in ("pg_get_userbyid",):
            return text("omnilake")
        if name == "pg_encoding_to_char":
            return text("UTF8")
        if name == "pg_get_expr":
            return exp.cast(args[0], "TEXT")
        if name in ("obj_description", "col_description", "shobj_description", "pg_get_viewdef",
                    "pg_get_serial_sequence", "pg_get_partkeydef", "pg_get_triggerdef",
                    "pg_get_statisticsobjdef_columns", "pg_get_function_result",
                    "pg_get_function_arguments", "pg_get_function_identity_arguments",
                    "pg_get_ruledef", "inet_server_addr", "inet_client_addr",
                    "pg_get_partition_constraintdef"):
            return null_text
        if name in ("pg_relation_size", "pg_total_relation_size", "pg_table_size",
                    "pg_indexes_size", "txid_current", "pg_current_xact_id"):
            return exp.Literal.number(0)
        if name == "pg_backend_pid":
            return exp.Literal.number(int(session.variables.get("backend_pid", 0)))
        if name == "inet_server_port":
            return exp.Literal.number(self.port)
        if name in ("to_regtype", "to_regclass", "to_regnamespace"):
            oid = self._lookup(session, name.removeprefix("to_"), args[0].name) \
                if isinstance(args[0], exp.Literal) else None
            return exp.cast(exp.Null(), "BIGINT") if oid is None else exp.Literal.number(oid)
        if name == "format_type" and len(args) == 2:  # DataFusion UDFs from here on
            return exp.Anonymous(this=name, expressions=[exp.cast(a, "BIGINT") for a in args])
        if name in ("pg_get_constraintdef", "pg_get_indexdef", "pg_regclass_name",
                    "pg_size_pretty"):
            return exp.Anonymous(this=name, expressions=[exp.cast(args[0], "BIGINT")])
        if name == "generate_subscripts" and args:  # beside unnest(a): the positions 1..n
            length = exp.cast(exp.Anonymous(this="array_length", expressions=[args[0]]), "BIGINT")
            return exp.Explode(this=exp.Anonymous(this="generate_series", expressions=[
                exp.Literal.number(1), length]))
        if name == "array_upper" and len(args) == 2:
            return exp.cast(exp.Anonymous(this="array_length", expressions=[args[0]]), "BIGINT")
        if name == "array_lower":
            return exp.Literal.number(1)
        return node

    def _lookup(self, session: "Session", kind: str, text: str) -> int | None:
        text = text.strip()
        if kind == "regtype":
            base = text.lower().split("(")[0].strip().strip('"').removeprefix("pg_catalog.")
            array = base.endswith("[]")
            base = _TYPE_ALIASES.get(base.removesuffix("[]"), base.removesuffix("[]"))
            oid = _TYPE_BY_NAME.get(base)
            if oid is not None and array:
                oid = TYPES[oid][3]
            return oid
        if kind == "regnamespace":
            return namespace_oid(text.strip('"')) if text.strip('"') in (
                self._namespaces() + ["pg_catalog", "information_schema"]) else None
        parts = [p.strip('"') if p.startswith('"') else p.lower() for p in text.split(".")]
        ns, name = (parts[0], parts[1]) if len(parts) == 2 else (session.schema, parts[0])
        if ns == "pg_catalog" or (len(parts) == 1 and name in SCHEMAS):
            return stable_oid("r", "pg_catalog", name) if name in SCHEMAS else None
        if self.engine.warehouse.catalog.table_exists((ns, name)):
            return stable_oid("r", ns, name)
        if name.endswith("_pkey") and self.engine.warehouse.catalog.table_exists((ns, name[:-5])):
            return stable_oid("i", ns, name)
        return None

    def _cast(self, session: "Session", node: exp.Cast) -> exp.Expression:
        to = node.to
        kind_node = to.args.get("kind") if isinstance(to, exp.DataType) else None
        if isinstance(kind_node, exp.Dot) and kind_node.this.name.lower() == "pg_catalog":
            from sqlglot import parse_one
            unqualified = parse_one(f"CAST(NULL AS {kind_node.expression.name})", read="postgres").to
            return self._cast(session, exp.Cast(this=node.this, to=unqualified))
        kind = to.this.upper() if isinstance(to, exp.ObjectIdentifier) else None
        if isinstance(to, exp.DataType) and to.this == exp.DataType.Type.NAME:
            return exp.cast(node.this, "TEXT")
        if isinstance(to, exp.DataType) and to.this == exp.DataType.Type.USERDEFINED:
            kind_name = to.args.get("kind").name.lower() if to.args.get("kind") else ""
            if kind_name in ("char", "name", "regproc", "text"):
                return exp.cast(node.this, "TEXT")
            if kind_name in ("int2vector", "oidvector"):
                return node.this
        if kind is None:
            return node
        value = node.this
        if kind == "OID":
            return exp.cast(value, "BIGINT")
        if kind in ("REGCLASS", "REGTYPE", "REGNAMESPACE"):
            if isinstance(value, exp.Literal) and value.is_string:
                oid = self._lookup(session, kind.lower(), value.this)
                if oid is None:
                    what = {"REGCLASS": "relation", "REGTYPE": "type",
                            "REGNAMESPACE": "schema"}[kind]
                    error = E.UndefinedTable if kind == "REGCLASS" else E.UndefinedObject
                    raise error(f'{what} "{value.this}" does not exist')
                return exp.Literal.number(oid)
            if isinstance(value, exp.Literal):
                return exp.cast(value, "BIGINT")
            if kind == "REGTYPE":
                return exp.Anonymous(this="format_type", expressions=[
                    exp.cast(value, "BIGINT"), exp.cast(exp.Null(), "BIGINT")])
            return exp.Anonymous(this="pg_regclass_name", expressions=[exp.cast(value, "BIGINT")])
        if kind in ("REGPROC", "REGPROCEDURE", "REGOPER", "REGROLE", "REGCONFIG"):
            return exp.cast(value, "TEXT")
        return node


def _mentions_catalog(tree: exp.Expression) -> bool:
    """Cheap test before the full rewrite walk: only statements using catalog syntax pay."""
    for node in tree.walk():
        if isinstance(node, exp.Table) and (node.name in SCHEMAS or (
                node.args.get("db") is not None and node.args["db"].name.lower() == "pg_catalog")):
            return True
        if isinstance(node, (exp.Anonymous, exp.Collate, exp.Operator, exp.CurrentSchema,
                             exp.CurrentSchemas, exp.CurrentUser, exp.SessionUser,
                             exp.CurrentDatabase)):
            return True
        if isinstance(node, exp.Cast) and isinstance(node.to, exp.ObjectIdentifier):
            return True
        if isinstance(node, exp.Cast) and node.to.this in (exp.DataType.Type.NAME,
                                                            exp.DataType.Type.USERDEFINED):
            return True
        if isinstance(node, exp.Dot) and isinstance(node.expression, exp.Func):
            return True
        if isinstance(node, exp.Column) and not node.table and node.name.lower() in (
                "current_user", "session_user", "user", "current_role", "current_catalog"):
            return True
    return False  # (information_schema._pg_expandarray sits beside pg_catalog tables)


# Option and ACL arrays OmniLake's catalog never fills (always NULL).
_NULL_ARRAYS = {"reloptions", "attoptions", "attfdwoptions", "spcoptions", "ftoptions", "useconfig",
                "rolconfig", "setconfig", "relacl", "attacl", "nspacl", "datacl", "typacl",
                "spcacl", "extconfig", "extcondition"}


def _unnests_null_column(select: exp.Select) -> bool:
    """`(SELECT ... FROM unnest(tc.reloptions) x)`: over an always-NULL array, no rows."""
    source = select.args.get("from_") or select.args.get("from")
    table = source.this if source is not None else None
    if not isinstance(table, exp.Table) or not isinstance(table.this, (exp.Explode, exp.Unnest)):
        return False
    argument = table.this.this if isinstance(table.this, exp.Explode) else \
        (table.this.expressions or [None])[0]
    return isinstance(argument, exp.Column) and argument.name in _NULL_ARRAYS


def _expandarray_argument(node: exp.Expression) -> exp.Expression | None:
    """The array of `information_schema._pg_expandarray(arr)`, else None."""
    if isinstance(node, exp.Dot) and isinstance(node.expression, exp.Anonymous) \
            and node.expression.name.lower() == "_pg_expandarray" and node.expression.expressions:
        return node.expression.expressions[0]
    return None


def _expandarray(node: exp.Expression) -> exp.Expression | None:
    """pgJDBC's getPrimaryKeys: `_pg_expandarray(a)` yields rows (x = element, n = position).
    `(_pg_expandarray(a)).n` becomes unnest(1..len(a)), the call itself and its `.x` unnest(a),
    and `(keys).x` of a column holding the call's result the column itself; unnests in one
    select list advance together."""
    if not isinstance(node, exp.Dot):
        return None
    array = _expandarray_argument(node)
    if array is not None:
        return exp.Explode(this=array.copy())
    inner = node.this.this if isinstance(node.this, exp.Paren) else None
    field = node.expression.name.lower() if isinstance(node.expression, exp.Identifier) else ""
    if isinstance(inner, exp.Explode):  # the call, rewritten already (children go first)
        if field == "n":
            length = exp.cast(exp.Anonymous(this="array_length", expressions=[inner.this.copy()]),
                              "BIGINT")
            return exp.Explode(this=exp.Anonymous(this="generate_series", expressions=[
                exp.Literal.number(1), length]))
        if field == "x":
            return inner.copy()
    if isinstance(inner, exp.Column) and field == "x":
        return inner.copy()
    return None


def _array_literal(text: str) -> exp.Expression:
    """'{0}' compared with an array column: an ARRAY literal."""
    items = [i.strip().strip('"') for i in text[1:-1].split(",") if i.strip()]
    return exp.Array(expressions=[exp.Literal.number(i) if i.lstrip("-").isdigit()
                                  else exp.Literal.string(i) for i in items])


def _is_scalar_position(node: exp.Subquery) -> bool:
    parent = node.parent
    return not isinstance(parent, (exp.From, exp.Join, exp.In, exp.Exists, exp.Lateral)) \
        and isinstance(node.this, exp.Select) and len(node.this.expressions) == 1


def _aggregated(node: exp.Subquery) -> exp.Expression:
    """`(SELECT x FROM ... WHERE <correlated>)` as `(SELECT max(x) ...)`: DataFusion plans a
    correlated scalar subquery only when it is aggregated; catalog lookups return one row."""
    select = node.this
    if select.args.get("group") or select.args.get("limit") or select.find(exp.AggFunc):
        return node
    projection = select.expressions[0]
    inner = projection.this if isinstance(projection, exp.Alias) else projection
    if isinstance(inner, exp.Star):
        return node
    aggregated = exp.Max(this=inner.copy())
    select.set("expressions", [exp.alias_(aggregated, projection.alias_or_name or "max")])
    outer = _outer_only_conditions(select)
    if outer:
        return exp.Case(ifs=[exp.If(this=exp.and_(*outer), true=node.copy())])
    return node


def _outer_only_conditions(select: exp.Select) -> list[exp.Expression]:
    """Remove and return the WHERE conjuncts that only read the outer query's columns
    (`... AND a.atthasdef`): DataFusion cannot decorrelate them, a CASE around the
    subquery says the same."""
    where = select.args.get("where")
    if where is None:
        return []
    inner = set()
    for table in select.find_all(exp.Table):
        inner.add(table.alias_or_name)
    conjuncts = list(where.this.flatten()) if isinstance(where.this, exp.And) else [where.this]
    outer, kept = [], []
    for condition in conjuncts:
        columns = list(condition.find_all(exp.Column))
        if columns and all(c.table and c.table not in inner for c in columns):
            outer.append(condition.copy())
        else:
            kept.append(condition)
    if outer:
        select.set("where", exp.Where(this=exp.and_(*kept)) if kept else None)
    return outer


def _array_of(query: exp.Expression) -> exp.Expression:
    """`ARRAY(SELECT x ...)` as `(SELECT array_agg(x) ...)`."""
    select = query.this if isinstance(query, exp.Subquery) else query
    projection = select.expressions[0]
    inner = projection.this if isinstance(projection, exp.Alias) else projection
    order = select.args.get("order")
    agg = exp.ArrayAgg(this=inner.copy())
    if order is not None:
        agg = exp.ArrayAgg(this=exp.Order(this=inner.copy(), expressions=order.expressions))
        select.set("order", None)
    select.set("expressions", [exp.alias_(agg, "array")])
    return exp.Subquery(this=select)


_OPERATORS = {"=": exp.EQ, "<>": exp.NEQ, "!=": exp.NEQ, "<": exp.LT, ">": exp.GT,
              "<=": exp.LTE, ">=": exp.GTE, "~~": exp.Like, "~~*": exp.ILike}


def _operator(node: exp.Operator) -> exp.Expression:
    op = str(node.args.get("operator")).split(".")[-1].strip()
    left, right = node.this, node.expression
    if op in ("~", "~*"):
        kind = exp.RegexpLike if op == "~" else exp.RegexpILike
        return kind(this=left, expression=right)
    if op in ("!~", "!~*"):
        kind = exp.RegexpLike if op == "!~" else exp.RegexpILike
        return exp.Not(this=kind(this=left, expression=right))
    if op in _OPERATORS:
        return _OPERATORS[op](this=left, expression=right)
    raise E.UndefinedFunction(f"operator does not exist: OPERATOR({node.args.get('operator')})")


def _register_udfs(ctx, catalog: PgCatalog) -> None:
    def format_type_udf(oids: pa.Array, mods: pa.Array) -> pa.Array:
        return pa.array([format_type(o, m) for o, m in zip(oids.to_pylist(), mods.to_pylist())],
                        pa.large_string())

    def lookup(table: dict[int, str]):
        def fn(oids: pa.Array) -> pa.Array:
            values = oids.to_pylist()
            if any(o is not None and o not in table for o in values):
                catalog.refresh_names()
            return pa.array([None if o is None else table.get(o) for o in values],
                            pa.large_string())
        return fn

    def quote_ident(values: pa.Array) -> pa.Array:
        out = []
        for v in values.to_pylist():
            if v is None:
                out.append(None)
            elif v.isidentifier() and v == v.lower() and v.isascii():
                out.append(v)
            else:
                out.append('"' + v.replace('"', '""') + '"')
        return pa.array(out, pa.large_string())

    def size_pretty(sizes: pa.Array) -> pa.Array:
        out = []
        for size in sizes.to_pylist():
            if size is None:
                out.append(None)
                continue
            for unit in ("bytes", "kB", "MB", "GB", "TB"):
                if abs(size) < 10 * 1024 or unit == "TB":
                    out.append(f"{int(size)} {unit}")
                    break
                size = size / 1024
        return pa.array(out, pa.large_string())

    def regclass_name(oids: pa.Array) -> pa.Array:
        names = catalog.class_names
        if any(o is not None and o not in names for o in oids.to_pylist()):
            catalog.refresh_names()
        return pa.array([None if o is None else names.get(o, str(o)) for o in oids.to_pylist()],
                        pa.large_string())

    i64, text = pa.int64(), pa.large_string()
    for fn, inputs, name in [
        (format_type_udf, [i64, i64], "format_type"),
        (lookup(catalog.constraint_defs), [i64], "pg_get_constraintdef"),
        (lookup(catalog.index_defs), [i64], "pg_get_indexdef"),
        (quote_ident, [text], "quote_ident"),
        (regclass_name, [i64], "pg_regclass_name"),
        (size_pretty, [i64], "pg_size_pretty"),
    ]:
        ctx.register_udf(udf(fn, inputs, text, "stable", name=name))
