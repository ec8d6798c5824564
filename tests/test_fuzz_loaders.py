"""A bounded run of benchmarks/fuzz_loaders.py: mutated IR and profile files, each loaded in a worker process.

The documented long run (docs/results/fuzz.md) uses the same code with 10,000+ mutants per loader.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_loaders.py"


def _harness():
    spec = importlib.util.spec_from_file_location("fuzz_loaders", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mutants_give_clean_errors_or_equal_loads_never_crashes():
    fuzz = _harness()
    res = fuzz.run(n_ir=100, n_profiles=60, workers=2, seed=12345, legacy_share=0.05)
    table, findings = res["table"], res["findings"]
    print(fuzz.format_table(table))
    assert findings == []                                       # no crash, hang, other exception, fallback
    total = sum(sum(v for k, v in c.items() if k != "fallback") for c in table.values())
    assert total == 160
    for category in ("bytes", "h5-edit"):                       # damage to a sealed file is always detected
        assert table[category]["error"] == sum(table[category].values()) > 0
    assert table["h5-resealed"]["error"] > 0 and table["profile"]["error"] > 0
    for c in table.values():
        assert c["crash"] == c["hang"] == c["other"] == 0
