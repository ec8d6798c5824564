"""Analytic ANN MAC counts against hand-computed values (1 MAC = 2 FLOPs)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from spikeport.frontend import load_model
from spikeport.frontend.macs import count_macs

torch.set_num_threads(1)


def test_conv_stride_padding_groups():
    # out (8, 8, 8) [16 + 2 - 3) // 2 + 1 = 8]; each output: (4 / 2 groups) x 3 x 3 = 18 MACs
    m = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2)
    mc = count_macs(m, torch.zeros(1, 4, 16, 16))
    assert mc.total_macs == 8 * 8 * 8 * 18 == 9216 and mc.flops == 2 * 9216
    # dilation 2, padding 0, non-square stride: out (3, (10 - 5) // 1 + 1, (9 - 5) // 2 + 1) = (3, 6, 3)
    m = nn.Conv2d(2, 3, 3, stride=(1, 2), dilation=2)
    assert count_macs(m, torch.zeros(1, 2, 10, 9)).total_macs == 3 * 6 * 3 * 2 * 9


def test_linear_pooling_and_per_sample():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.MaxPool2d(2),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    mc = count_macs(net, torch.zeros(3, 1, 8, 8))          # batch 3: counts are per sample
    rows = [(r.op, r.macs, r.other) for r in mc.rows]
    assert rows == [
        ("Conv2d", 4 * 8 * 8 * 9, {}),
        ("ReLU", 0, {"activation": 256}),
        ("AvgPool2d", 4 * 4 * 4 * 4, {}),                    # 64 outputs x 2x2 window
        ("MaxPool2d", 0, {"compare": 16 * 3}),               # 16 outputs x (4 - 1) comparisons
        ("AdaptiveAvgPool2d", 4 * 2 * 2, {}),                # every input once
        ("Linear", 40, {}),
    ]
    assert mc.batch == 3 and mc.total_macs == 2304 + 256 + 16 + 40


def test_adaptive_pool_uneven_windows_and_mean():
    # 5 -> 3 bins: windows [0,2) [1,4) [3,5) = 2 + 3 + 2 = 7 per axis -> 49 per channel
    mc = count_macs(nn.AdaptiveAvgPool2d(3), torch.zeros(1, 2, 5, 5))
    assert mc.total_macs == 2 * 49

    class GAP(nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))
    assert count_macs(GAP(), torch.zeros(1, 3, 4, 4)).total_macs == 48


class Block(nn.Module):
    """Pre-norm transformer block: qkv projection, q.k^T, softmax, attention x v, output projection, MLP."""

    def __init__(self, d: int = 32, heads: int = 4, hidden: int = 64):
        super().__init__()
        self.h = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(b, n, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1)) * (d // self.h) ** -0.5
        att = att.softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(y)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


def test_transformer_block_by_hand():
    n, d, heads, hidden = 10, 32, 4, 64
    mc = count_macs(Block(d, heads, hidden), torch.zeros(2, n, d))
    by = {r.name: r for r in mc.rows}
    assert by["qkv"].macs == n * d * 3 * d                 # 30720
    assert by["matmul"].macs == heads * n * n * (d // heads) == n * n * d    # q . k^T: 3200
    assert by["softmax"].macs == 0 and by["softmax"].other == {"exp": heads * n * n, "add": 400, "div": 400, "max": 400}
    assert by["matmul_1"].macs == n * n * d                # attention x v
    assert by["proj"].macs == n * d * d
    assert by["fc1"].macs == n * d * hidden and by["fc2"].macs == n * hidden * d
    assert by["ln1"].macs == 2 * n * d and by["ln1"].other == {"rsqrt": n}
    attention = n * d * 3 * d + 2 * n * n * d + n * d * d
    assert mc.total_macs == attention + 2 * n * d * hidden + 2 * (2 * n * d)


def test_sdpa_counts_like_explicit_attention():
    class SDPA(nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = SDPA()

        def forward(self, x):
            return self.a(x, x, x)
    mc = count_macs(Wrap(), torch.zeros(1, 2, 6, 8))      # heads 2, n 6, d_head 8
    assert mc.total_macs == 2 * (2 * 6 * 6 * 8)


def test_graph_module_and_ann_model():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    want = 4 * 6 * 6 * 9 + 144 * 10
    assert count_macs(fx.symbolic_trace(net), torch.zeros(1, 1, 8, 8)).total_macs == want
    ann = load_model(net, input_shape=(1, 8, 8))
    mc = count_macs(ann)                                   # example input from ann.input_shape
    assert mc.total_macs == want
    fx_names = {node.name for node in ann.module.graph.nodes}
    assert {r.name for r in mc.rows if r.macs} <= fx_names


def test_untraceable_module_falls_back_to_module_calls():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            if x.sum() > 0:              # data-dependent control flow: symbolic_trace fails
                x = x * 2
            return self.fc(x)
    mc = count_macs(Branchy(), torch.ones(1, 8))
    assert mc.by_name()["fc"].macs == 32 and mc.total_macs == 32
    assert mc.to_json()["total_macs"] == 32 and "2 FLOPs" in mc.to_json()["unit"]
