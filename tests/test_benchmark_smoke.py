"""Smoke test of the benchmark harness: `benchmarks/bench.py --quick` runs to the end and writes a
result for every workload, with positive grukit timings. Keras is left out (its import alone takes
seconds); the peers that are installed run, the others are skipped by the harness itself."""
import json
import os
import subprocess
import sys

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "benchmarks", "bench.py")
WORKLOADS = ["seed", "small", "medium", "large", "latency"]


def test_quick_benchmark_writes_every_workload(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, BENCH, "--quick", "--no-keras", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "results.json").read_text())
    assert set(data["workloads"]) == set(WORKLOADS)
    for name in WORKLOADS:
        cells = data["workloads"][name]["cells"]
        assert set(cells) == {"gru", "lstm"}, name
        for cell, entry in cells.items():
            assert entry["ops"], (name, cell)
            for op, result in entry["ops"].items():
                grukit = result["sides"]["grukit"]
                assert grukit["median_s"] > 0, (name, cell, op)
                assert all(t > 0 for t in grukit["by_threads"][str(grukit["threads"])]["samples_s"])
                assert result["bound"]["flops"] > 0 and result["bound"]["bound_s"] > 0
                for peer, diff in entry["parity_max_abs_diff"].items():
                    assert diff < 1e-3, (name, cell, peer, diff)
    assert (out / "results.md").read_text().startswith("**Machine:**")
    assert "| workload | cell | op | grukit |" in proc.stdout


def test_seed_fit_script_runs():
    """benchmarks/seed_fit.py (the seed's model.fit in grukit and Keras), two epochs, one round."""
    script = os.path.join(os.path.dirname(BENCH), "seed_fit.py")
    proc = subprocess.run([sys.executable, script, "--epochs", "2", "--rounds", "1",
                           "--backends", "torch"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any(line.split()[:1] == ["grukit"] for line in lines), proc.stdout
    assert any("keras-torch" in line and "faster" in line for line in lines), proc.stdout
