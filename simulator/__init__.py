"""spikeport.simulator."""
