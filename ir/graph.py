"""The IR network: a networkx DiGraph of inputs, populations, projections and operators.

Edges run source -> projection -> target, and operator.inputs -> operator. Nodes are stored under
the node attribute ``obj``. A network is a plain value: passes take one and return a new one.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Iterator

import networkx as nx
import numpy as np

from .datapath import Datapath
from .nodes import Input, Node, Operator, Population, Projection, param_ok
from ..errors import SpikeportError


class IRError(SpikeportError):
    """An IR graph or file breaks the schema; the message names the file, node and value."""


@dataclass
class Network:
    """A spiking network in hardware-neutral form.

    coding    'C1' (average coding, input and biases every step, decode = mean), 'C2' (sum coding) or
              'C3' (staged coding of MBE neurons, decode = sum; methods.md section 0, ir/neurons_mbe.py).
    outputs   names of the populations whose decoded values are the network output.
    datapath  set when the network is quantised (integer parameters), else None.
    meta      free-form provenance: method, calibration, source model, ANN accuracy, ...
    """

    graph: nx.DiGraph = field(default_factory=nx.DiGraph)
    coding: str = "C1"
    outputs: list[str] = field(default_factory=list)
    datapath: Datapath | None = None
    meta: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ building
    def add(self, node: Node) -> Node:
        if node.name in self.graph:
            raise IRError(f"node name {node.name!r} is used twice")
        if not node.name or "/" in node.name:
            raise IRError(f"node name {node.name!r} must be non-empty and contain no '/'")
        self.graph.add_node(node.name, obj=node, order=self.graph.number_of_nodes())
        if isinstance(node, Projection):
            for end in (node.source, node.target):
                if end not in self.graph:
                    raise IRError(f"projection {node.name!r} refers to unknown node {end!r}")
            self.graph.add_edge(node.source, node.name)
            self.graph.add_edge(node.name, node.target)
        elif isinstance(node, Operator):
            for src in node.inputs:
                if src not in self.graph:
                    raise IRError(f"operator {node.name!r} reads unknown node {src!r}")
                self.graph.add_edge(src, node.name)
        return node

    def copy(self, share_arrays: bool = False) -> "Network":
        """A deep copy. ``share_arrays``: the nodes' numpy arrays are shared, not copied (for passes
        that replace arrays and never write into them: a large network is not held twice)."""
        memo: dict = {}
        if share_arrays:
            for node in self.nodes():
                _collect_arrays(node, memo)
        return copy.deepcopy(self, memo)

    # ------------------------------------------------------------------ queries
    def __getitem__(self, name: str) -> Node:
        try:
            return self.graph.nodes[name]["obj"]
        except KeyError:
            raise KeyError(f"no node named {name!r} in the network") from None

    def __contains__(self, name: str) -> bool:
        return name in self.graph

    @property
    def quantized(self) -> bool:
        return self.datapath is not None

    def nodes(self) -> Iterator[Node]:
        """All nodes in a topological order (sources before targets)."""
        for name in nx.lexicographical_topological_sort(self.graph, key=self._order_key):
            yield self.graph.nodes[name]["obj"]

    def _order_key(self, name: str):
        return self.graph.nodes[name].get("order", 0), name

    def inputs(self) -> list[Input]:
        return [n for n in self.nodes() if isinstance(n, Input)]

    def populations(self) -> list[Population]:
        return [n for n in self.nodes() if isinstance(n, Population)]

    def projections(self) -> list[Projection]:
        return [n for n in self.nodes() if isinstance(n, Projection)]

    def operators(self) -> list[Operator]:
        return [n for n in self.nodes() if isinstance(n, Operator)]

    def incoming(self, name: str) -> list[Projection]:
        """Projections targeting population ``name``, in a stable order."""
        return sorted((self[p] for p in self.graph.predecessors(name) if isinstance(self[p], Projection)),
                      key=lambda p: p.name)

    def outgoing(self, name: str) -> list[Projection]:
        return sorted((self[p] for p in self.graph.successors(name) if isinstance(self[p], Projection)),
                      key=lambda p: p.name)

    def shape_of(self, name: str) -> tuple[int, ...]:
        node = self[name]
        shape = getattr(node, "shape", None)
        if shape is None:
            raise IRError(f"node {name!r} ({type(node).__name__}) has no shape")
        return tuple(int(s) for s in shape)

    def latency(self) -> int:
        """Steps between the input and the last output population's first active step."""
        return max((self[o].t_start for o in self.outputs), default=0)

    # ------------------------------------------------------------------ checks
    def validate(self, where: str = "network") -> None:
        """Check every node and every shape relation; raise IRError naming the node."""
        if self.coding not in ("C1", "C2", "C3"):
            raise IRError(f"{where}: coding {self.coding!r} must be 'C1', 'C2' or 'C3'")
        if not nx.is_directed_acyclic_graph(self.graph):
            cycle = nx.find_cycle(self.graph)
            raise IRError(f"{where}: the graph has a cycle through {[e[0] for e in cycle]}")
        if not self.inputs():
            raise IRError(f"{where}: no input node")
        if not self.outputs:
            raise IRError(f"{where}: no output population named")
        for o in self.outputs:
            if o not in self.graph or not isinstance(self[o], Population):
                raise IRError(f"{where}: output {o!r} is not a population of the network")
        if self.datapath is not None:
            try:
                self.datapath.validate()
            except ValueError as e:
                raise IRError(f"{where}: {e}") from None
        for node in self.nodes():
            try:
                if isinstance(node, Projection):
                    node.validate_common()
                    src, dst = self[node.source], self[node.target]
                    if not isinstance(dst, Population):
                        raise ValueError(f"{node._where()}: target must be a population, is {type(dst).__name__}")
                    if isinstance(src, Projection):
                        raise ValueError(f"{node._where()}: source must be an input, population or operator")
                    node.validate_shapes(self.shape_of(node.source), self.shape_of(node.target))
                    if not param_ok(node.scale, self.shape_of(node.target)):
                        raise ValueError(f"{node._where()}: scale has shape {np.shape(node.scale)}; expected a scalar, "
                                         f"one per target channel or the target shape {self.shape_of(node.target)}")
                    if self.quantized:
                        w = np.asarray(node.weight)
                        if w.size and not np.array_equal(w, np.round(w)):
                            raise ValueError(f"{node._where()}: quantised network has non-integer weights")
                else:
                    node.validate()
                    if isinstance(node, Operator) and hasattr(node, "validate_inputs"):
                        node.validate_inputs([self.shape_of(i) for i in node.inputs])
            except IRError:
                raise
            except ValueError as e:
                raise IRError(f"{where}: {e}") from None
        for pop in self.populations():
            if pop.name not in self.outputs and not list(self.graph.successors(pop.name)):
                raise IRError(f"{where}: population {pop.name!r} feeds nothing and is not an output")
            if not self.incoming(pop.name):
                raise IRError(f"{where}: population {pop.name!r} has no incoming projection")
            # a neuron model names the codings it runs in (MBE: C3 only); readouts run in any
            allowed = getattr(type(pop.neuron), "codings", ("C1", "C2", "C3") if not pop.neuron.spiking else ("C1", "C2"))
            if self.coding not in allowed:
                raise IRError(f"{where}: population {pop.name!r} ({type(pop.neuron).__name__}) runs in coding "
                              f"{' or '.join(allowed)}, the network uses {self.coding}")

    def summary(self) -> list[dict]:
        """One row per population: name, shape, neuron, fan-in, incoming projections."""
        rows = []
        for pop in self.populations():
            inc = self.incoming(pop.name)
            rows.append({
                "name": pop.name,
                "shape": list(pop.shape),
                "neurons": pop.size,
                "neuron": type(pop.neuron).__name__,
                "payload": pop.payload.kind,
                "incoming": [f"{p.connectivity}:{p.source}" for p in inc],
                "synapses": int(sum(np.asarray(p.weight).size if p.connectivity == "dense" else p.fan_in() * pop.size for p in inc)),
                "t_start": pop.t_start,
            })
        return rows


def _collect_arrays(value, memo: dict, depth: int = 0) -> None:
    """Put every numpy array reachable through dataclass fields, dicts and sequences into ``memo``."""
    if isinstance(value, np.ndarray):
        memo[id(value)] = value
    elif depth < 8 and is_dataclass(value) and not isinstance(value, type):
        for f in fields(value):
            _collect_arrays(getattr(value, f.name), memo, depth + 1)
    elif depth < 8 and isinstance(value, dict):
        for v in value.values():
            _collect_arrays(v, memo, depth + 1)
    elif depth < 8 and isinstance(value, (list, tuple)):
        for v in value:
            _collect_arrays(v, memo, depth + 1)
