"""Packing on one node: the pure placement, then the runner with real subprocesses, a real failure and a
real SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import pytest
from conftest import ROOT

from gsm8k_bench.core.errors import BenchError
from gsm8k_bench.fleet import pack
from gsm8k_bench.fleet.pack import Need, order, pick, place


def test_largest_first_on_the_lowest_contiguous_gpus():
    needs = order([Need("a1", 1), Need("b4", 4), Need("c2", 2), Need("d2", 2), Need("e8", 8)])
    assert [n.name for n in needs] == ["e8", "b4", "c2", "d2", "a1"]
    assert place(needs, range(8)) == [(needs[0], tuple(range(8)))]
    started = place(needs[1:], range(8))
    assert [(n.name, ids) for n, ids in started] == [("b4", (0, 1, 2, 3)), ("c2", (4, 5)), ("d2", (6, 7))]


def test_smaller_sessions_fill_gaps_while_a_larger_one_waits():
    # Three GPUs free: the tp=4 session waits; the tp=2 takes the contiguous pair, the tp=1 the gap.
    started = place([Need("big", 4), Need("pair", 2), Need("one", 1)], [0, 2, 3])
    assert [(n.name, ids) for n, ids in started] == [("pair", (2, 3)), ("one", (0,))]


def test_pick_prefers_a_contiguous_run_and_falls_back_to_the_lowest():
    assert pick([0, 2, 3, 5], 2) == (2, 3)
    assert pick([0, 2, 5], 2) == (0, 2)
    assert pick([0], 2) is None
    assert pick([], 0) == ()


def test_a_session_larger_than_the_node_is_refused(matrix):
    combos = [matrix.get("gsm8k-llama-3.3-70b-mi355x-sglang-fp16-tp8")]
    with pytest.raises(BenchError, match="needs 8 GPUs but --gpus gives 4"):
        pack.run_packed(combos, (0, 1, 2, 3), ROOT, lambda c, ids: ["true"], pack.Table(print))


# A stand-in for `nox -s <session>`: a real process that holds its GPUs a while, records them with its
# start and end times, writes its session JSON (with the run id the pack gave it), and fails when its
# name says so.
FAKE_SESSION = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from gsm8k_bench.core import results
    name, gpus, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    start = time.time()
    time.sleep(float(sys.argv[4]))
    (out / f"{name}.times").write_text(json.dumps({"gpus": gpus, "start": start, "end": time.time()}))
    if "fail" in name:
        sys.exit(3)
    results.write_atomic(out / f"{name}.json", {"schema": 1, "session": name, "status": "passed",
        "config": {"tp": len(gpus.split(",")), "vendor": "nvidia", "gpus": {"ids": gpus.split(",")}},
        "timings": {"env_setup_s": 0.0, "model_prep_s": 0.0, "server_ready_s": 0.5, "total_s": 1.0},
        "environment": {"run_id": os.environ["GSM8K_BENCH_RUN_ID"]}})
""")


def tp2(matrix, framework):
    """A tp=2 combination (the matrix has none): same model and runner, two GPUs."""
    return replace(matrix.get(f"gsm8k-llama-3.1-8b-h100-{framework}-fp16-tp1"), tp=2)


def fake_command(results_dir, seconds="1.5"):
    return lambda combo, ids: [sys.executable, "-c", FAKE_SESSION, combo.name, ",".join(map(str, ids)),
                               str(results_dir), seconds]


def test_the_runner_packs_real_processes_and_a_failure_stops_only_itself(matrix, tmp_path):
    combos = [matrix.get("gsm8k-llama-3.3-70b-h100-vllm-fp16-tp4"), tp2(matrix, "vllm"), tp2(matrix, "sglang"),
              matrix.get("gsm8k-llama-3.1-8b-h100-vllm-fp16-tp1")]
    combos[2] = replace(combos[2], model=replace(combos[2].model, name="fail-me"))
    lines = []
    documents = pack.run_packed(combos, range(8), tmp_path, fake_command(tmp_path), pack.Table(lines.append))
    by = {d["session"]: d for d in documents}
    assert by[combos[2].name]["status"] == "failed"
    assert "nox exited with code 3" in by[combos[2].name]["error"]["message"]
    assert [by[c.name]["status"] for c in (combos[0], combos[1], combos[3])] == ["passed"] * 3
    times = {c.name: json.loads((tmp_path / f"{c.name}.times").read_text()) for c in combos}
    first_three = [times[c.name] for c in combos[:3]]
    # tp4, tp2, tp2 ran at once on disjoint GPUs; the tp1 waited for the first GPU to free up.
    assert max(t["start"] for t in first_three) < min(t["end"] for t in first_three)
    used = [set(t["gpus"].split(",")) for t in first_three]
    assert set.union(*used) == set(map(str, range(8))) and sum(map(len, used)) == 8
    assert times[combos[3].name]["start"] >= min(t["end"] for t in first_three) - 0.05
    assert by[combos[0].name]["pack"]["gpus"] == [0, 1, 2, 3]
    assert any(line.startswith("start  ") for line in lines) and any("failed" in line for line in lines)


def test_sigint_stops_every_running_session_and_each_gets_a_json(matrix, tmp_path):
    driver = textwrap.dedent(f"""
        import signal, sys
        from pathlib import Path
        # Ctrl-C as in a terminal, also when pytest runs as a background job (which starts with SIGINT ignored).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from test_pack import fake_command, tp2
        from gsm8k_bench.fleet import pack
        from gsm8k_bench.matrix.loader import load_matrix
        m = load_matrix({str(ROOT / 'matrix.yaml')!r})
        combos = [tp2(m, "vllm"), tp2(m, "sglang")]
        out = Path({str(tmp_path)!r})
        try:
            pack.run_packed(combos, range(4), out, fake_command(out, "300"), pack.Table(print))
        except KeyboardInterrupt:
            print("stopped", flush=True)
            sys.exit(130)
    """)
    proc = subprocess.Popen([sys.executable, "-c", driver], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        started = [proc.stdout.readline() for _ in range(2)]
        assert all(line.startswith("start") for line in started), started
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()  # a failed assertion above must not leave the driver and its sessions behind
    assert proc.returncode == 130 and "stopped" in out
    for name in ("gsm8k-llama-3.1-8b-h100-vllm-fp16-tp2", "gsm8k-llama-3.1-8b-h100-sglang-fp16-tp2"):
        document = json.loads((tmp_path / f"{name}.json").read_text())
        assert document["status"] == "failed" and "exited with code" in document["error"]["message"]
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftovers == []


def test_the_packed_sessions_are_one_family_for_the_gate(matrix, tmp_path, monkeypatch):
    commands = []

    def record(combos, node_gpus, results_dir, command, table):
        commands.extend(command(combo, (0,)) for combo in combos)
        return []

    monkeypatch.setattr(pack, "run_packed", record)
    pack.run(matrix, ["-k", "h100 and fp8 and tp1", "--gpus", "0-7", "--results-dir", str(tmp_path), "--limit", "5"])
    assert len(commands) > 1
    for argv in commands:
        assert argv[-4:] == ["--gate-family", str(len(commands)), "--limit", "5"]
