"""spikeport: take converted spiking neural networks to neuromorphic hardware.

Data flows one way: frontend -> convert -> ir -> compiler passes -> simulator/backends -> report.
"""
__version__ = "0.1.0"
