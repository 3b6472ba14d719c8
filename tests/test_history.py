"""The results history (gsm8k_bench/reporting/history): the same tests against SQLite and a real
PostgreSQL (a private cluster, tests/postgres_cluster.py).  Ingests run as real processes where it
matters: two at once, and one SIGKILLed inside a run's transaction."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, require, require_module

require_module("sqlalchemy")  # the `history` extra (in `test` too)

import postgres_cluster  # noqa: E402
from fakes.history_runs import Nightly, document, expected_flip_rate  # noqa: E402
from sqlalchemy import create_engine, event, func, select, text  # noqa: E402

from gsm8k_bench.core import results  # noqa: E402
from gsm8k_bench.reporting import report  # noqa: E402
from gsm8k_bench.reporting.history import cli, first_bad, ingest, noise, store, trend  # noqa: E402
from gsm8k_bench.reporting.history.schema import metrics, outcomes, runs  # noqa: E402
from gsm8k_bench.verdicts import gate  # noqa: E402

SESSION = "gsm8k-llama-3.1-8b-h100-vllm-fp8-tp1"
SETTINGS = gate.GateSettings()


@pytest.fixture(scope="module")
def postgres():
    require(postgres_cluster.missing() is None, str(postgres_cluster.missing()))
    cluster = postgres_cluster.Cluster()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def history_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.sqlite'}"
    return request.getfixturevalue("postgres").new_database()


def write_artifacts(folder: Path, documents: list[dict]) -> list[Path]:
    """As the workflow's summary job downloads them: <folder>/<artifact>/<session>.json."""
    paths = []
    for doc in documents:
        artifact = folder / f"{doc['session']}-{doc['environment']['run_id']}-attempt1"
        artifact.mkdir(parents=True)
        path = artifact / f"{doc['session']}.json"
        path.write_text(json.dumps(doc))
        paths.append(path)
    return paths


def history(*argv: str, url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gsm8k_bench.reporting.history", "--url", url, *argv],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def stored(url: str) -> dict[str, tuple[int, int]]:
    """run_key -> (metric rows, outcome rows), as committed."""
    engine = store.create(url)
    try:
        with engine.connect() as connection:
            keys = dict(connection.execute(select(runs.c.id, runs.c.run_key)).all())
            counts = {}
            for run_id, key in keys.items():
                counts[key] = tuple(connection.scalar(select(func.count()).select_from(table)
                                                      .where(table.c.run == run_id)) for table in (metrics, outcomes))
            return counts
    finally:
        engine.dispose()


def expected_rows(doc: dict) -> tuple[int, int]:
    levels = doc["config"]["concurrency_levels"]
    # the gating level: 5 lm-eval numbers and 2 of the server's; each other level: its 5 lm-eval numbers
    return 7 + 5 * (len(levels) - 1), len(levels) * len(doc["samples"])


def test_ingest_stores_each_run_once_however_often_and_however_named(history_url, tmp_path):
    docs = Nightly(SESSION, 4, questions=50, levels=(1, 8)).documents()
    paths = write_artifacts(tmp_path / "results", docs)
    first = history("ingest", str(tmp_path / "results"), "--workflow-run", "123", url=history_url)
    assert first.returncode == 0, first.stderr
    assert "4 stored, 0 already there, 0 refused" in first.stdout
    # Again, as a folder, as a single file and through another path: nothing new.
    again = history("ingest", str(tmp_path / "results"), str(paths[0]), str(paths[0].parent), url=history_url)
    assert again.returncode == 0 and "0 stored, 6 already there" in again.stdout
    counts = stored(history_url)
    assert sorted(counts.values()) == sorted(expected_rows(d) for d in docs)
    with store.create(history_url).connect() as connection:
        assert set(connection.scalars(select(runs.c.workflow_run_id))) == {"123"}
        assert sorted(connection.scalars(select(runs.c.image_digest))) == ["sha256:aaa"] * 4


def test_two_ingests_at_once_of_overlapping_folders_store_each_run_once(history_url, tmp_path):
    docs = [*Nightly(SESSION, 12, questions=300).documents(),
            *Nightly("gsm8k-llama-3.1-8b-mi355x-sglang-fp8-tp1", 12, questions=300, seed=2).documents()]
    write_artifacts(tmp_path / "a", docs[:16])
    write_artifacts(tmp_path / "b", docs[8:])
    store.open_store(history_url).dispose()  # schema first: the race under test is the runs', not the migration's
    argv = [sys.executable, "-m", "gsm8k_bench.reporting.history", "--url", history_url, "ingest"]
    procs = [subprocess.Popen([*argv, str(tmp_path / side)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for side in ("a", "b")]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    counts = stored(history_url)
    assert len(counts) == 24
    assert sorted(counts.values()) == sorted(expected_rows(d) for d in docs)
    # Each of the 8 runs in both folders was stored by exactly one of them.
    said = [o.count("\nstored ") + o.startswith("stored ") for o, _ in outputs]
    assert sum(said) == 24


def writer_transaction_open(url: str) -> bool:
    """Whether another connection holds an open write transaction on the history right now."""
    if url.startswith("sqlite"):
        probe = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError as exc:
            assert "locked" in str(exc)
            return True
        finally:
            probe.close()
    engine = create_engine(store.parse_url(url))
    try:
        with engine.connect() as connection:
            return bool(connection.scalar(text(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()")))
    finally:
        engine.dispose()


def running_with(argument: str) -> list[int]:
    """PIDs of live processes with `argument` on their command line (zombies have none)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if argument.encode() in cmdline.read_bytes().split(b"\0"):
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def test_a_killed_ingest_leaves_no_partial_run(history_url, tmp_path):
    docs = Nightly(SESSION, 30, levels=(1, 16, 64, 128)).documents()  # 5,276 outcome rows per run
    write_artifacts(tmp_path / "results", docs)
    store.open_store(history_url).dispose()
    proc = subprocess.Popen([sys.executable, "-m", "gsm8k_bench.reporting.history", "--url", history_url, "ingest",
                             str(tmp_path / "results")], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    caught = False
    deadline = time.monotonic() + 120
    while not caught and proc.poll() is None and time.monotonic() < deadline:
        os.kill(proc.pid, signal.SIGSTOP)
        if stored(history_url) and writer_transaction_open(history_url):
            caught = True  # stopped inside a run's transaction, after at least one run was committed
        else:
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.01)
    assert caught, "the ingest was never seen inside a run's transaction"
    os.kill(proc.pid, signal.SIGKILL)
    os.kill(proc.pid, signal.SIGCONT)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # Its file-reading workers (it reads 30 files in worker processes) died with it.
    deadline = time.monotonic() + 10
    while running_with(str(tmp_path / "results")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running_with(str(tmp_path / "results"))
    counts = stored(history_url)
    assert 0 < len(counts) < len(docs)
    assert set(counts.values()) == {expected_rows(docs[0])}  # every stored run whole
    # The next ingest stores the rest, and what was stored stays as it was.
    rerun = history("ingest", str(tmp_path / "results"), url=history_url)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(docs) - len(counts)} stored, {len(counts)} already there" in rerun.stdout
    assert set(stored(history_url).values()) == {expected_rows(docs[0])}


def test_a_malformed_json_is_refused_naming_file_and_key_and_nothing_of_it_is_written(history_url, tmp_path):
    good, wrong_type, missing_outcome, not_json = Nightly(SESSION, 4, questions=20).documents()
    wrong_type["samples"][3]["strict_correct"] = "maybe"
    missing_outcome["samples"][5]["flexible_correct"] = None
    paths = write_artifacts(tmp_path / "results", [good, wrong_type, missing_outcome, not_json])
    paths[3].write_text(json.dumps(not_json)[:500])
    result = history("ingest", str(tmp_path / "results"), url=history_url)
    assert result.returncode == 1
    assert f"refused {paths[1]}: samples.3.strict_correct: " in result.stdout
    assert f"refused {paths[2]}: samples.5.flexible_correct: missing (true or false expected)" in result.stdout
    assert f"refused {paths[3]}: (the file): JSON syntax error" in result.stdout
    assert "1 stored, 0 already there, 3 refused" in result.stdout
    assert list(stored(history_url)) == [f"{SESSION}|{good['environment']['run_id']}|"
                                         f"{good['environment']['started_at']}|1"]


def test_an_old_schema_database_migrates_with_its_data(history_url, tmp_path):
    engine = store.create(history_url)
    store.upgrade(engine, "0001")
    assert store.current_revision(engine) == "0001"
    with engine.begin() as connection:  # a run stored by the first schema, in its own columns
        connection.execute(text("INSERT INTO runs (run_key, session, status, started_at, source, gate_concurrency) "
                                "VALUES ('old|r1|2025-12-31T02:00:00+00:00|1', :s, 'passed', :t, 'old.json', 1)"),
                           {"s": SESSION, "t": "2025-12-31 02:00:00"})
        run_id = connection.scalar(text("SELECT id FROM runs"))
        connection.execute(text("INSERT INTO metrics VALUES (:r, 1, 'strict_match', 0.75), (:r, 1, 'n', 4)"),
                           {"r": run_id})
    with pytest.raises(Exception, match="workflow_run_id"), engine.connect() as connection:
        connection.execute(select(runs.c.workflow_run_id)).all()
    engine.dispose()
    store.open_store(history_url).dispose()  # brings it to the newest schema
    engine = store.create(history_url)
    assert store.current_revision(engine) == store.head_revision() == "0002"
    write_artifacts(tmp_path / "results", Nightly(SESSION, 2, questions=10).documents())
    assert history("ingest", str(tmp_path / "results"), url=history_url).returncode == 0
    with engine.connect() as connection:
        points = trend.trend(connection, SESSION, SETTINGS)
    assert points[0].run.started_at == dt.datetime(2025, 12, 31, 2) and points[0].run.run_id is None
    assert points[0].run.strict_match == 0.75 and points[0].run.workflow_run_id is None
    assert len(points) == 3
    engine.dispose()


def ingest_documents(url: str, folder: Path, documents: list[dict]) -> None:
    write_artifacts(folder, documents)
    result = cli.main(["--url", url, "ingest", str(folder)], out=open(os.devnull, "w"))  # noqa: SIM115
    assert result == 0


def test_first_bad_names_the_run_of_the_image_bump_that_dropped_accuracy(history_url, tmp_path):
    nightly = Nightly(SESSION, 20, bump_day=13, drop=0.06, seed=5)
    docs = nightly.documents()
    ingest_documents(history_url, tmp_path / "results", docs)
    engine = store.create(history_url)
    with engine.connect() as connection:
        found, walked = first_bad.first_bad(connection, SESSION, SETTINGS)
        points = trend.trend(connection, SESSION, SETTINGS)
    engine.dispose()
    assert found is not None
    assert found.bad.run_id == docs[13]["environment"]["run_id"]
    assert found.healthy.run_id == docs[12]["environment"]["run_id"]
    assert (found.healthy.image, found.bad.image) == ("vllm/vllm:v1", "vllm/vllm:v2")
    right_before = {s["doc_id"] for s in docs[12]["samples"] if s["strict_correct"]}
    dropped = set(range(0, 1319, round(1 / 0.06)))
    assert dropped & right_before <= set(found.lost["strict_match"])
    text_out = first_bad.describe(found, SESSION, walked)
    assert "* image              vllm/vllm:v1" in text_out and "lost under strict_match" in text_out
    # trend marks the bump on that run and on no other
    assert [i for i, p in enumerate(points) if p.changes] == [13]
    assert points[13].changes == ["image: vllm/vllm:v1 -> vllm/vllm:v2", "image_digest: sha256:aaa -> sha256:bbb"]
    assert all(p.lower <= p.run.strict_match <= p.upper for p in points)
    assert trend.plot(points, SESSION, tmp_path / "trend.png").stat().st_size > 10_000


def test_first_bad_finds_nothing_when_an_image_bump_changed_nothing(history_url, tmp_path):
    ingest_documents(history_url, tmp_path / "results", Nightly(SESSION, 20, bump_day=13, seed=5).documents())
    engine = store.create(history_url)
    with engine.connect() as connection:
        assert first_bad.first_bad(connection, SESSION, SETTINGS) == (None, 20)
    engine.dispose()


def test_noise_reports_the_flip_rate_the_history_was_built_with(history_url, tmp_path):
    steady = Nightly(SESSION, 16, borderline=0.12, seed=7)
    creeping = Nightly("gsm8k-llama-3.1-8b-mi355x-sglang-fp8-tp1", 16, borderline=0.12, seed=8,
                       noisy_from=9, noisy_borderline=0.25)
    ingest_documents(history_url, tmp_path / "results", [*steady.documents(), *creeping.documents()])
    engine = store.create(history_url)
    with engine.connect() as connection:
        stacks = {s.stack: s for s in noise.noise(connection, SETTINGS, window=7)}
        only = noise.noise(connection, SETTINGS, keywords="h100")
    engine.dispose()
    vllm = stacks[("vllm", "h100", "fp8")]
    assert len(vllm.pairs) == 15 and vllm.questions == 15 * 1319
    assert vllm.lower <= expected_flip_rate(steady.probabilities) <= vllm.upper
    assert vllm.upper - vllm.lower < 0.02
    assert vllm.alarm is None
    assert vllm.detectable_drop == noise.detectable_drop(vllm.accuracy, vllm.rate, SETTINGS)
    assert 0.02 < vllm.detectable_drop < 0.1
    assert stacks[("sglang", "mi355x", "fp8")].alarm.startswith("flip rate rose from")
    assert [s.stack for s in only] == [("vllm", "h100", "fp8")]


def flips_from_documents(docs: list[dict]) -> dict[tuple[str, str, str], list[tuple[str, str, int, int]]]:
    """noise's pairs computed from the JSONs alone: per session, its passed runs in time order; each two
    consecutive ones with the same image and digest; their gating samples compared question by question."""
    by_stack: dict[tuple[str, str, str], list[tuple[str, str, int, int]]] = {}
    for session in sorted({d["session"] for d in docs}):
        passed = sorted((d for d in docs if d["session"] == session and d["status"] == "passed"),
                        key=lambda d: d["environment"]["started_at"])
        for a, b in itertools.pairwise(passed):
            if (a["config"]["image"], a["config"]["server"]) != (b["config"]["image"], b["config"]["server"]):
                continue
            right = {s["doc_id"]: s["strict_correct"] for s in a["samples"]}
            flipped = sum(right[s["doc_id"]] != s["strict_correct"] for s in b["samples"])
            stack = (b["config"]["framework"], b["config"]["runner"], b["config"]["precision"])
            by_stack.setdefault(stack, []).append((a["environment"]["run_id"], b["environment"]["run_id"],
                                                   len(b["samples"]), flipped))
    return by_stack


def test_noise_counts_every_pair_as_the_jsons_say_in_a_few_queries(history_url, tmp_path):
    """A larger history: three sessions on two stacks, an image bump (the pair across it is not A/A) and
    failed runs (skipped: the pair closes over them); the counts are the JSONs' own, and the database is
    asked a few times, not once per pair."""
    docs = []
    for seed, session in enumerate((SESSION, "gsm8k-qwen3-8b-h100-vllm-fp8-tp1",
                                    "gsm8k-llama-3.1-8b-mi355x-sglang-fp8-tp1")):
        for day, doc in enumerate(Nightly(session, 40, questions=200, borderline=0.2, seed=seed + 11,
                                          bump_day=25).documents()):
            if day % 9 == 4:
                doc["status"] = "failed"
            docs.append(doc)
    ingest_documents(history_url, tmp_path / "results", docs)
    expected = flips_from_documents(docs)
    engine = store.create(history_url)
    statements = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with engine.connect() as connection:
        stacks = noise.noise(connection, SETTINGS)
    engine.dispose()
    found = {s.stack: sorted((p.earlier.run_id, p.later.run_id, p.common, p.flipped) for p in s.pairs)
             for s in stacks}
    assert found == {stack: sorted(pairs) for stack, pairs in expected.items()}
    assert sum(len(pairs) for pairs in expected.values()) > 80 and all(f for *_, f in expected[stacks[0].stack])
    assert len(statements) <= 8, statements


def test_report_html_shows_each_sessions_recent_history_when_one_is_configured(history_url, tmp_path, monkeypatch):
    nightly = Nightly(SESSION, 14, questions=150, borderline=0.3, seed=21, bump_day=9)
    docs = nightly.documents()
    docs[-1]["status"] = "failed"  # the newest run is not healthy: the page points at first-bad
    ingest_documents(history_url, tmp_path / "history-input", docs)
    results_dir = tmp_path / "results"
    write_artifacts(results_dir, [docs[-1], Nightly("gsm8k-qwen3-8b-h100-vllm-fp8-tp1", 1, questions=20).run_day(0)])
    monkeypatch.setenv(store.URL_VARIABLE, history_url)
    warnings: list[str] = []
    page = report.write_report(results_dir, tmp_path / "out", warnings.append)["html"].read_text()
    assert not warnings
    section = page.split("<section id='history-section'>")[1].split("</section>")[0]
    rows = {r.split("</td>")[0].removeprefix("<tr><td>"): r for r in section.split("<tbody>")[1].split("</tr>")[:-1]}
    assert set(rows) == {SESSION}  # the other session has no run in the history
    cells = [cell.split("'>", 1)[1].split("</td>")[0] for cell in rows[SESSION].split("<td")[3:13]]
    recent = docs[-10:]
    assert [c.split("<sup")[0] for c in cells] == [f"{d['metrics']['strict_match']:.3f}" for d in recent]
    assert [("▲" in c) for c in cells] == [d is docs[9] for d in recent]  # the image bump, and only it
    # The recent A/A flip rate, from the JSONs: the healthy pairs among the last 10 runs with the same
    # image, as noise counts them.
    pairs = flips_from_documents(recent)[("vllm", "h100", "fp8")]
    flipped, common = sum(p[3] for p in pairs), sum(p[2] for p in pairs)
    assert f"{flipped / common:.4f} [" in rows[SESSION] and f"over {len(pairs)} pairs" in rows[SESSION]
    assert f"<code>nox -s history -- first-bad {SESSION}</code>" in rows[SESSION]
    assert f"<td>{len(docs)}</td>" in rows[SESSION]


def test_report_html_has_no_history_section_unless_one_is_configured(tmp_path, monkeypatch):
    monkeypatch.setenv("GSM8K_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(store.URL_VARIABLE, raising=False)
    write_artifacts(tmp_path / "results", [Nightly(SESSION, 1, questions=20).run_day(0)])
    page = report.write_report(tmp_path / "results", tmp_path / "out", print)["html"].read_text()
    assert "history-section" not in page and not store.default_path().exists()  # nothing created either
    # One that cannot be read: a warning (password hidden), and the report is written all the same.
    monkeypatch.setenv(store.URL_VARIABLE, f"postgresql://bench:s3cretpassw0rd@/history?host={tmp_path}&port=1")
    warnings: list[str] = []
    page = report.write_report(tmp_path / "results", tmp_path / "out", warnings.append)["html"].read_text()
    assert "history-section" not in page and SESSION in page
    assert len(warnings) == 1 and warnings[0].startswith("no history section: cannot open the history database "
                                                         "postgresql+psycopg://bench:***@/history")


def test_detectable_drop_grows_with_the_flip_rate():
    drops = [noise.detectable_drop(0.8, flip, SETTINGS) for flip in (0.0, 0.05, 0.1, 0.2)]
    assert drops == sorted(drops) and drops[0] > SETTINGS.tolerance and drops[-1] > drops[0] + 0.01


def test_an_unreachable_database_fails_with_a_message_that_hides_the_password(tmp_path):
    url = f"postgresql://bench:s3cretpassw0rd@/history?host={tmp_path}&port=1"
    with pytest.raises(store.HistoryError) as caught:
        store.open_store(url)
    message = str(caught.value)
    assert message.startswith("cannot open the history database postgresql+psycopg://bench:***@/history")
    assert "s3cretpassw0rd" not in message
    result = subprocess.run([sys.executable, "-m", "gsm8k_bench.reporting.history", "ingest", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, env={**os.environ, store.URL_VARIABLE: url})
    assert result.returncode == 2 and "error: cannot open the history database" in result.stderr
    assert "s3cretpassw0rd" not in result.stderr + result.stdout


def test_storing_a_sessions_json_where_no_database_can_be_made_says_why_and_how_to_catch_up(tmp_path):
    """`--history`'s store (ingest.ingest_result): a SQLite path under a regular file cannot be created
    (a file system refusal, as a read-only folder is for an unprivileged user); the JSON is left as it was."""
    result = tmp_path / f"{SESSION}.json"
    result.write_text(json.dumps(document(SESSION, dt.datetime(2026, 2, 1, tzinfo=dt.timezone.utc), {1: [True]})))
    before = result.read_bytes()
    (tmp_path / "a-file").write_text("")
    with pytest.raises(store.HistoryError) as caught:
        ingest.ingest_result(result, f"sqlite:///{tmp_path / 'a-file' / 'history.sqlite'}")
    message = str(caught.value)
    assert message.startswith(f"{result} was not stored in the history: cannot open the history database "
                              f"sqlite+pysqlite:///{tmp_path / 'a-file' / 'history.sqlite'}: cannot create its "
                              f"folder {tmp_path / 'a-file'}: File exists")
    assert message.endswith(f"store it later with: nox -s history -- ingest {result}")
    assert result.read_bytes() == before
    stored_at = tmp_path / "ok.sqlite"
    assert ingest.ingest_result(result, f"sqlite:///{stored_at}") == (
        f"history: stored {result} in the history sqlite+pysqlite:///{stored_at}")
    assert ingest.ingest_result(result, f"sqlite:///{stored_at}").startswith(f"history: {result} was already stored")


def test_a_password_in_the_history_url_is_a_secret_in_every_form():
    environ = {store.URL_VARIABLE: "postgresql://bench:p%40ss-w0rd@db.example:5432/history"}
    assert "p@ss-w0rd" in results.secret_values(environ)
    line = "connecting as bench:p@ss-w0rd and p%40ss-w0rd"
    assert results.mask(line, environ) == "connecting as bench:*** and ***"


def test_an_unknown_database_kind_is_refused_naming_the_variable():
    with pytest.raises(store.HistoryError, match="GSM8K_HISTORY_URL: unsupported database 'mysql'"):
        store.parse_url("mysql://u@h/db")


def test_the_default_history_is_a_sqlite_file_in_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("GSM8K_BENCH_CACHE", str(tmp_path))
    monkeypatch.delenv(store.URL_VARIABLE, raising=False)
    assert store.configured_url() == f"sqlite:///{tmp_path / 'history.sqlite'}"
    doc = document(SESSION, dt.datetime(2026, 2, 1, tzinfo=dt.timezone.utc), {1: [True, False]})
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / f"{SESSION}.json").write_text(json.dumps(doc))
    assert cli.main(["ingest", str(tmp_path / "r")], out=open(os.devnull, "w")) == 0  # noqa: SIM115
    assert (tmp_path / "history.sqlite").is_file()
