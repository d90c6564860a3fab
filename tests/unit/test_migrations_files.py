"""Migration files and migrator planning, without a database."""

from __future__ import annotations

import re
from importlib.resources import files

import pytest

from sinks.dburl import mask_password, redact
from sinks.migrate import (
    AppliedMigration,
    Migration,
    MigrationError,
    checksum,
    compare,
    load_idempotent,
    load_migrations,
    migrate,
    parse_migration_filename,
    plan_migrate,
    plan_rollback,
    verify,
)

# Landed migrations are frozen: the migrator refuses to run against a database
# where an applied file changed, so catch an edit here, before review. A new
# migration adds its checksum (print(load_migrations()[-1].checksum)) when it
# lands; an existing one is never changed.
FROZEN = {
    1: "f2cc9315afe9154c11bb720dbee7e2f148babf635aad5b8f3ea0412e6d728603",
    2: "2dd28c95cdd0d62eb6d20b55d8c9e683e5dc7f3cf6606b64201f87491e661bb9",
    3: "3dfcd7b28900c0d056c773a4ebe229d5a91ad124acfad8e10dfa0e0b7cfbe97a",
    4: "a98355c700ed50370316ca17281b7a996461b5e495dc2455b19e691e8e015c00",
    5: "42a411514833b550017386dc211c3f0b995035edaa3492d7e3aeae2716937d4f",
    6: "5a7add6c17348c26bfdacc4f9188409de94230bf6f05875baee15d2a5b381ff6",
    7: "25c0d33fc6bd5db2cfb2949be3aab1a87d9716214a97680b076ced5aa9d9bf9f",
    8: "c9ec73095b988389f0a79b41302f8b41fe7a14ebb76a2235c42f51aedd2d38b7",
    9: "903198b647d5daf2151ba466b981740809de976a826c71145b43199e5f284881",
}

VERSIONS = files("sinks") / "migrations" / "versions"


def _sql_names(directory) -> list[str]:
    return sorted(e.name for e in directory.iterdir() if e.name.endswith(".sql"))


# ---------------------------------------------------------------- packaged files


def test_packaged_migrations_are_found_via_importlib_resources():
    assert _sql_names(VERSIONS), "no migration files found in the sinks package"


def test_every_file_name_parses():
    for name in _sql_names(VERSIONS):
        parse_migration_filename(name)


def test_every_up_has_a_down_with_the_same_name():
    parsed = [parse_migration_filename(n) for n in _sql_names(VERSIONS)]
    ups = {(p.version, p.name) for p in parsed if p.direction == "up"}
    downs = {(p.version, p.name) for p in parsed if p.direction == "down"}
    assert ups == downs


def test_numbering_is_contiguous_from_one():
    versions = sorted({parse_migration_filename(n).version for n in _sql_names(VERSIONS)})
    assert versions == list(range(1, len(versions) + 1))


def test_load_migrations_accepts_the_packaged_files():
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert all(m.up_sql.strip() and m.down_sql.strip() for m in migrations)


def test_landed_migrations_are_unchanged():
    by_version = {m.version: m for m in load_migrations()}
    for version, expected in FROZEN.items():
        assert by_version[version].checksum == expected, (
            f"{by_version[version].up_filename} changed after it landed; "
            "put the change in a new numbered migration instead"
        )


def test_down_drops_every_table_its_up_creates():
    create = re.compile(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", re.IGNORECASE)
    for m in load_migrations():
        for table in create.findall(m.up_sql):
            assert re.search(rf"DROP TABLE (?:IF EXISTS )?[\w, ]*\b{table}\b", m.down_sql, re.I), (
                f"{m.down_filename} does not drop {table}"
            )


def test_idempotent_files_declare_a_known_schema_version():
    latest = len(load_migrations())
    scripts = load_idempotent()
    assert scripts, "expected at least the Grafana trace function"
    for script in scripts:
        assert 0 <= script.requires_version <= latest, script.filename


def test_idempotent_files_only_replace_objects():
    # They run on every migrate: a plain CREATE would fail the second time.
    plain_create = re.compile(
        r"^\s*CREATE\s+(?!OR\s+REPLACE\b)(?!INDEX\s+IF\s+NOT\s+EXISTS\b)(?!TABLE\s+IF\s+NOT\s+EXISTS\b)",
        re.IGNORECASE | re.MULTILINE,
    )
    for script in load_idempotent():
        assert not plain_create.search(script.sql), script.filename


# ---------------------------------------------------------------- loading rules


def _write(root, names: dict[str, str]) -> None:
    for rel, text in names.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize(
    "bad", ["1_x.up.sql", "0001_x.sql", "0001_X.up.sql", "0001-x.up.sql", "0000_x.up.sql"]
)
def test_bad_file_names_are_rejected(bad):
    with pytest.raises(MigrationError, match="bad migration file name"):
        parse_migration_filename(bad)


def test_missing_down_is_rejected(tmp_path):
    _write(tmp_path, {"versions/0001_a.up.sql": "SELECT 1;"})
    with pytest.raises(MigrationError, match="0001_a has no .down.sql"):
        load_migrations(tmp_path)


def test_gap_in_numbering_is_rejected(tmp_path):
    _write(
        tmp_path,
        {
            "versions/0001_a.up.sql": "",
            "versions/0001_a.down.sql": "",
            "versions/0003_c.up.sql": "",
            "versions/0003_c.down.sql": "",
        },
    )
    with pytest.raises(MigrationError, match="expected 0002, found 0003"):
        load_migrations(tmp_path)


def test_two_names_for_one_version_are_rejected(tmp_path):
    _write(tmp_path, {"versions/0001_a.up.sql": "", "versions/0001_b.down.sql": ""})
    with pytest.raises(MigrationError, match="two names"):
        load_migrations(tmp_path)


def test_non_sql_files_are_ignored(tmp_path):
    _write(
        tmp_path,
        {"versions/README.md": "x", "versions/0001_a.up.sql": "", "versions/0001_a.down.sql": ""},
    )
    assert [m.label for m in load_migrations(tmp_path)] == ["0001_a"]


def test_idempotent_file_without_requires_version_is_rejected(tmp_path):
    _write(tmp_path, {"idempotent/0001_v.sql": "CREATE OR REPLACE VIEW v AS SELECT 1;"})
    with pytest.raises(MigrationError, match="requires-version"):
        load_idempotent(tmp_path)


def test_idempotent_files_run_in_name_order(tmp_path):
    _write(
        tmp_path,
        {
            "idempotent/0200_b.sql": "-- requires-version: 2\n",
            "idempotent/0100_a.sql": "-- requires-version: 1\n",
        },
    )
    assert [(s.filename, s.requires_version) for s in load_idempotent(tmp_path)] == [
        ("0100_a.sql", 1),
        ("0200_b.sql", 2),
    ]


def test_missing_directories_mean_no_migrations(tmp_path):
    assert load_migrations(tmp_path) == ()
    assert load_idempotent(tmp_path) == ()


# ---------------------------------------------------------------- planning


FILES = [Migration(v, f"m{v}", f"up{v}", f"down{v}") for v in (1, 2, 3)]


def _applied(*versions: int) -> list[AppliedMigration]:
    return [AppliedMigration(v, f"m{v}", checksum(f"up{v}")) for v in versions]


def test_plan_migrate_applies_the_rest_in_order():
    assert [m.version for m in plan_migrate(FILES, [])] == [1, 2, 3]
    assert [m.version for m in plan_migrate(FILES, [1, 2, 3])] == []


@pytest.mark.parametrize(
    ("applied", "to", "expected"),
    [
        ([1, 2, 3], None, [3]),
        ([1, 2, 3], 0, [3, 2, 1]),
        ([1, 2, 3], 2, [3]),
        ([1, 2, 3], 3, []),
        ([1, 2, 3], 9, []),
        ([], None, []),
        ([1], None, [1]),
    ],
)
def test_plan_rollback(applied, to, expected):
    assert [m.version for m in plan_rollback(FILES, applied, to)] == expected


def test_plan_rollback_rejects_negative_target():
    with pytest.raises(MigrationError, match="cannot roll back to version -1"):
        plan_rollback(FILES, [1], -1)


def test_compare_states():
    rows = _applied(1, 3) + [AppliedMigration(4, "m4", "x")]
    rows[0] = AppliedMigration(1, "m1", checksum("edited"))
    states = {s.version: s.state for s in compare(FILES, rows)}
    assert states == {1: "changed", 2: "out_of_order", 3: "applied", 4: "missing"}


def test_renamed_file_counts_as_changed():
    rows = [AppliedMigration(1, "old_name", checksum("up1"))]
    assert compare(FILES, rows)[0].state == "changed"


def test_verify_lists_every_problem():
    rows = [AppliedMigration(1, "m1", "tampered")] + _applied(3) + [AppliedMigration(4, "m4", "x")]
    with pytest.raises(MigrationError) as info:
        verify(FILES, rows)
    message = str(info.value)
    assert "0001_m1 changed" in message
    assert "0002_m2 never applied" in message
    assert "0004_m4 file missing" in message
    assert "Hint:" in message


def test_verify_accepts_matching_files():
    verify(FILES, _applied(1, 2))


def test_checksum_ignores_line_endings_only():
    assert checksum("a;\r\nb;\r\n") == checksum("a;\nb;\n")
    assert checksum("a;\n") != checksum("a; \n")


# ---------------------------------------------------------------- no secrets in output


@pytest.mark.parametrize(
    ("conninfo", "masked"),
    [
        ("postgresql://u:p%40ss@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgres://u:pw@h/db?sslmode=require", "postgres://u:***@h/db?sslmode=require"),
        (
            "postgresql://u@h/db?password=pw&sslmode=disable",
            "postgresql://u@h/db?password=***&sslmode=disable",
        ),
        ("postgresql://h/db", "postgresql://h/db"),
        ("host=h password=pw user=u", "host=h password=*** user=u"),
        ("host=h password = 'p w' user=u", "host=h password = *** user=u"),
    ],
)
def test_mask_password(conninfo, masked):
    assert mask_password(conninfo) == masked


def test_redact_removes_encoded_and_decoded_password():
    url = "postgresql://u:p%40ss@h/db"
    assert redact("got p@ss and p%40ss", url) == "got *** and ***"


def test_unreachable_database_is_a_migration_error_without_password():
    # Port 1 refuses connections at once; no database needed.
    with pytest.raises(MigrationError) as info:
        migrate("postgresql://u:s3cret@127.0.0.1:1/x")
    assert "cannot connect" in str(info.value)
    assert "s3cret" not in str(info.value)
    assert info.value.hint
