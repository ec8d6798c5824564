"""Partitioning onto cores and chips: hand calculations from the profiles' limits."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from rich.console import Console

from spikeport.compiler.partition import ResourceError, partition
from spikeport.hw_profiles import load_profile
from spikeport.ir import IF, Conv2d, Dense, Input, Network, Population, Readout
from spikeport.report.resources import resources_report

torch.set_num_threads(1)


def dense_net(n_in: int, n_out: int) -> Network:
    net = Network()
    net.add(Input("in", shape=(n_in,)))
    net.add(Population("fc", shape=(n_out,), neuron=IF()))
    net.add(Dense("d", source="in", target="fc", weight=np.zeros((n_out, n_in), np.float32)))
    net.outputs = ["fc"]
    return net


def test_loihi2_4096_dense():
    # per neuron: 4096 synapses x 16 bit = 8192 B + 8 B state; per core: 4096 input axons x 4 B = 16384 B
    # (196608 - 16384) // 8200 = 21 neurons per core -> ceil(4096 / 21) = 196 cores -> ceil(196 / 128) = 2 chips
    p = partition(dense_net(4096, 4096), load_profile("loihi2"))
    lp = p.layers["fc"]
    assert (lp.neurons_per_core, lp.n_cores, p.cores, p.chips) == (21, 196, 196, 2)
    assert lp.binding == "memory_per_core_bytes" and p.chip_binding == "cores_per_chip"
    assert lp.cores[0].core_memory_bytes == 21 * 8200 + 16384 and lp.cores[-1].neurons == 4096 - 195 * 21
    assert lp.usage["fan_in_per_core"] == (4096, None)


def test_spinnaker1_4096_dense():
    # 256 neurons per core (binding) -> 16 cores = one chip; DTCM 256 x 48 B; SDRAM 4096^2 x 4 B = 64 MiB < 123 MB
    p = partition(dense_net(4096, 4096), load_profile("spinnaker1"))
    lp = p.layers["fc"]
    assert (lp.neurons_per_core, p.cores, p.chips, lp.binding) == (256, 16, 1, "neurons_per_core")
    assert lp.cores[0].core_memory_bytes == 256 * 48 and lp.cores[0].sdram_bytes == 256 * 4096 * 4
    assert p.router_entries_max == 16


def test_spinnaker1_sdram_binds_chips():
    # fan-in 16384: each core's synaptic matrix 256 x 16384 x 4 B = 16 MiB; 7 fit in 123 MB -> chips 7 + 7 + 2
    p = partition(dense_net(16384, 4096), load_profile("spinnaker1"))
    assert (p.cores, p.chips, p.chip_binding) == (16, 3, "sdram_per_chip_bytes")
    assert [c.chip for c in p.layers["fc"].cores] == [0] * 7 + [1] * 7 + [2] * 2


def test_loihi1_synapse_pool():
    # 128 KB synapse pool / (4096 x 2 B) = 16 neurons per core -> 256 cores -> 2 chips
    p = partition(dense_net(4096, 4096), load_profile("loihi1"))
    assert (p.layers["fc"].neurons_per_core, p.cores, p.chips) == (16, 256, 2)
    assert p.layers["fc"].binding == "synapse_memory_per_core_bytes"


def test_oversize_fan_in_raises_named_error():
    with pytest.raises(ResourceError) as err:
        partition(dense_net(5000, 10), load_profile("loihi1"))
    e = err.value
    assert (e.layer, e.resource, e.required, e.limit) == ("fc", "fan_in_per_core", 5000, 4096)
    assert "'fc'" in str(e) and "fan_in_per_core" in str(e) and "5000" in str(e) and "4096" in str(e)
    # Loihi 2 has no public fan-in limit: one neuron with 40000 inputs overflows the 192 KB core instead
    with pytest.raises(ResourceError, match="memory_per_core_bytes requires 240008, limit is 196608"):
        partition(dense_net(40000, 10), load_profile("loihi2"))


def test_fan_out_splits_the_source_layer_on_loihi1():
    net = Network()
    net.add(Input("in", shape=(16,)))
    net.add(Population("a", shape=(2048,), neuron=IF()))
    net.add(Dense("d1", source="in", target="a", weight=np.zeros((2048, 16))))
    net.add(Population("b", shape=(4096,), neuron=IF()))
    net.add(Dense("d2", source="a", target="b", weight=np.zeros((4096, 2048))))
    net.outputs = ["b"]
    p = partition(net, load_profile("loihi1"))
    # b: 128 KB / (2048 x 2 B) = 32 neurons per core -> 128 cores; each a-neuron reaches all 128, so an a-core
    # drives n x 128 output axons <= 4096 -> n = 32 -> 64 cores
    assert (p.layers["b"].neurons_per_core, p.layers["b"].n_cores) == (32, 128)
    assert (p.layers["a"].neurons_per_core, p.layers["a"].n_cores, p.layers["a"].binding) == (32, 64, "fan_out_per_core")
    assert p.layers["a"].usage["fan_out_per_core"] == (4096, 4096)


def conv_layer() -> Network:
    net = Network()
    net.add(Input("in", shape=(2, 6, 6)))
    net.add(Population("c", shape=(4, 6, 6), neuron=IF()))
    net.add(Conv2d("cv", source="in", target="c", weight=np.ones((4, 2, 3, 3)), padding=(1, 1)))
    net.add(Population("o", shape=(10,), neuron=Readout()))
    net.add(Dense("d", source="c", target="o", weight=np.zeros((10, 144))))
    net.outputs = ["o"]
    return net


def test_conv_synapse_memory_expanded_vs_shared():
    # true fan-in per output pixel (3x3, pad 1, 6x6): corners 4, edges 6, inner 9 -> per channel
    # 4*4 + 16*6 + 16*9 = 256 positions x 2 input channels = 512 synapses; 4 channels -> 2048
    l2 = partition(conv_layer(), load_profile("loihi2"))
    assert l2.layers["c"].n_cores == 1 and l2.layers["c"].cores[0].synapses == 2048
    assert l2.layers["c"].cores[0].fan_in == 72          # every input pixel reaches the single core
    # SpiNNaker 1 shares the kernel: 4 channels x (2 x 3 x 3) = 72 words in DTCM, nothing in SDRAM
    s1 = partition(conv_layer(), load_profile("spinnaker1"))
    core = s1.layers["c"].cores[0]
    assert core.synapses == 72 and core.sdram_bytes == 0 and core.core_memory_bytes == 144 * 48 + 72 * 4


def test_conv_fan_in_per_slice_is_exact():
    prof = load_profile("spinnaker1")
    net = Network()
    net.add(Input("in", shape=(1, 32, 32)))
    net.add(Population("c", shape=(1, 32, 32), neuron=Readout()))
    net.add(Conv2d("cv", source="in", target="c", weight=np.ones((1, 1, 3, 3)), padding=(1, 1)))
    net.outputs = ["c"]
    lp = partition(net, prof).layers["c"]
    # 256 neurons = rows 0-7, 8-15, ...: each slice sees its 8 rows plus one halo row per inner side
    assert [c.fan_in for c in lp.cores] == [9 * 32, 10 * 32, 10 * 32, 9 * 32]


def test_delay_limit():
    net = dense_net(4, 4)
    net["d"].delay = 100
    with pytest.raises(ResourceError, match="max_delay_steps requires 100, limit is 62"):
        partition(net, load_profile("loihi2"))


def test_resources_report_json_and_table():
    rep = resources_report(dense_net(4096, 4096), "loihi2")
    js = rep.to_json()
    assert js["cores"] == 196 and js["chips"] == 2 and js["layers"][0]["binding"] == "memory_per_core_bytes"
    assert js["layers"][0]["utilisation"]["neurons_per_core"] == pytest.approx(21 / 8192)
    con = Console(width=200, record=True)
    con.print(rep.table())
    text = con.export_text()
    assert "196" in text and "memory_per_core_bytes" in text


def test_mbe_neurons_count_one_compartment_per_branch_and_basis():
    """An MBE neuron (paper 001) holds one potential per branch and basis: B*N compartments and B*N states
    per neuron, plus the population's B*N*T-entry kernel tables once per core; synapses, fan-in and events
    stay per neuron (one graded event per step). GELU: B = 2, N = 4, T = 16 on loihi2 (24-bit state,
    24-bit payload): 8 compartments, 8 x 8 B state per neuron, 2*4*16 entries x 72 bits = 1152 B tables."""
    from spikeport.convert.mbe_params import default_fit
    from spikeport.ir.neurons_mbe import MBETable
    fit = default_fit("gelu")
    prof = load_profile("loihi2")

    def mbe_net(neuron) -> Network:
        net = Network(coding="C3")
        net.add(Input("in", shape=(16,), coding="once"))
        net.add(Population("g", shape=(3000,), neuron=neuron))
        net.add(Dense("w", source="in", target="g", weight=np.ones((3000, 16))))
        net.outputs = ["g"]
        return net
    V, R, D = fit.neuron().tables()
    for neuron in (fit.neuron(), MBETable(threshold=np.ceil(V * 2 ** 10), reset=np.round(R * 2 ** 10),
                                          intensity=np.round(D * 2 ** 10))):
        p = partition(mbe_net(neuron), prof)
        lp = p.layers["g"]
        # 8192 compartments per core / 8 per neuron = 1024 neurons per core -> 3 cores (one IF per neuron: 1 core)
        assert (lp.states, lp.compartments, lp.neurons_per_core, lp.n_cores) == (8, 24000, 1024, 3)
        assert lp.binding == "neurons_per_core" and lp.usage["neurons_per_core"] == (8192, 8192)
        core = lp.cores[0]
        assert core.state_bytes == 1024 * 8 * 8 + 2 * 4 * 16 * 72 // 8
        assert core.synapses == 1024 * 16 and core.fan_in == 16               # per neuron, not per basis
        assert lp.to_json()["compartments"] == 24000 and lp.to_json()["compartments_per_neuron"] == 8
    if_lp = partition(dense_net(16, 3000), prof).layers["fc"]
    assert (if_lp.states, if_lp.n_cores, if_lp.cores[0].state_bytes) == (1, 1, 3000 * 8)
