"""spikeport.frontend."""
