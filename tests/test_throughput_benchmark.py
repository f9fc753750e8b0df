"""The throughput benchmark's bookkeeping (benchmarks/throughput.py): per-round
ratios and fractions within a process, and their spread across processes."""

import pytest

from tests.script_loader import load_script


@pytest.fixture(scope="module")
def throughput():
    return load_script("benchmarks", "throughput")


def test_summarize_takes_per_round_ratios(throughput):
    rates = {"tfp_flows": [100.0, 90.0, 120.0], "tfp": [50.0, 60.0, 40.0],
             "networks_chained": [125.0, 100.0, 120.0]}
    entry = throughput.summarize(rates)
    assert entry["tfp_flows_img_s"] == 100.0
    assert (entry["ratio"], entry["ratio_min"], entry["ratio_max"]) == (2.0, 1.5, 3.0)
    assert entry["ratio_of_medians"] == 100.0 / 50.0
    assert (entry["fraction_of_networks_chained"],
            entry["fraction_of_networks_chained_min"],
            entry["fraction_of_networks_chained_max"]) == (0.9, 0.8, 1.0)


def test_child_processes_get_the_arguments_without_processes_and_out(throughput):
    argv = ["--config", "small", "--processes", "3", "--out=x.json", "--rounds", "5",
            "--out", "y.json"]
    assert throughput._without(argv, "--processes", "--out") == [
        "--config", "small", "--rounds", "5"]


def test_spread_across_processes(throughput):
    def run(ratio, fraction):
        return {"results": [{"config": "small", "precision": "float32", "timings": {
            "train/jit=False": {"ratio": ratio, "ratio_min": 0.0, "tfp_img_s": 1.0,
                                "fraction_of_networks_chained": fraction,
                                "fraction_of_networks_chained_max": 9.0}}}]}

    spread = throughput.across_processes([run(2.5, 0.88), run(2.7, 0.86), run(2.6, 0.91)])
    train = spread["small/float32/train/jit=False"]
    assert set(train) == {"ratio", "fraction_of_networks_chained"}
    assert train["ratio"] == {"median": 2.6, "min": 2.5, "max": 2.7,
                              "per_process": [2.5, 2.7, 2.6]}
    assert train["fraction_of_networks_chained"]["median"] == 0.88
    assert train["fraction_of_networks_chained"]["min"] == 0.86
